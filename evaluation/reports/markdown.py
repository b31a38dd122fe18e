"""README-ready Markdown: identity, per-direction scores, averages, off-target confusion, repetition loops,
signatures."""

from __future__ import annotations

from typing import Any

from evaluation.reports import tables
from evaluation.reports.tables import Table


def md_table(table: Table) -> str:
    head, body = table
    esc = [[c.replace("|", "\\|") for c in row] for row in [head, *body]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def generation_note(run: dict[str, Any]) -> str:
    """Prompt style, resumed directions and generation time: what a reader needs to trust the numbers."""
    notes = []
    if run.get("prompt"):
        notes.append(f"prompt `{run['prompt']}`")
    if run.get("resumed_directions"):
        notes.append(f"resumed {len(run['resumed_directions'])} finished direction(s)")
    for g in run.get("generation") or []:
        notes.append(f"generation {g['seconds']:.0f} s ({g['segments_per_s'] or 0:.2f} segments/s)")
    return "".join(f" · {n}" for n in notes)


def render(doc: dict[str, Any], plots: dict[str, str], delta: Table | None = None, base_id: str | None = None) -> str:
    run = doc["run"]
    parts = [
        f"# {run['suite']}: {', '.join(doc['systems'])}",
        f"Run `{run['run_id']}` · test set `{run['test_set']['path']}` ({run['test_set']['format']}, "
        f"{run['test_set']['references']} references) · {len(run['directions'])} directions · "
        f"{run['segments_per_system']} segments per system · started {run['started']}" + generation_note(run),
        "## Models", md_table(tables.identity_table(doc)),
        "## Averages", md_table(tables.aggregate_table(doc)),
        "## Scores by direction", md_table(tables.direction_table(doc)),
    ]
    if delta is not None:
        parts += [f"## Change against `{base_id}`", md_table(delta)]
    if "off_target" in run["metrics"]:
        parts += ["## Off-target confusion", md_table(tables.confusion_table(doc))]
    if "repetition" in run["metrics"]:
        parts += ["## Repetition loops", md_table(tables.repetition_table(doc))]
    if plots:
        parts += ["## Plots", *[f"![{title}]({path})" for title, path in plots.items()]]
    parts += ["## Signatures", md_table(tables.signature_table(doc))]
    return "\n\n".join(parts) + "\n"
