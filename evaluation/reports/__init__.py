"""Reports of a run: `scores.json` (machine), `report.md` (README-ready) and `report.html` (self-contained, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.outputs import RunDir, find_run, read_scores, safe_name
from evaluation.reports import html, markdown, plots, tables


def single_system(doc: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    """The doc restricted to one system (the only one, or the named one)."""
    systems = list(doc["systems"])
    if system is None:
        if len(systems) != 1:
            raise ValueError(f"run {doc['run']['run_id']} scored {len(systems)} systems ({', '.join(systems)}); "
                             "name one as RUN:SYSTEM")
        system = systems[0]
    if system not in doc["systems"]:
        raise ValueError(f"run {doc['run']['run_id']} has no system {system!r} (has: {', '.join(systems)})")
    return {**doc, "systems": {system: doc["systems"][system]},
            "rows": [r for r in doc["rows"] if r["system"] == system],
            "aggregates": [a for a in doc["aggregates"] if a["system"] == system]}


def make_plots(doc: dict[str, Any], base: dict[str, Any] | None = None, base_label: str = "base") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for metric in [m for m in ("bleu", "chrf", "comet") if m in doc["run"]["metrics"]]:
        out[f"{tables.LABELS[metric]} per direction"] = plots.per_language_bars(doc, metric)
    for metric, (_, title) in plots.RATE_PLOTS.items():
        if metric in doc["run"]["metrics"]:
            out[f"{title} per direction"] = plots.rate_bars(doc, metric)
    if base is not None:
        new_label = next(iter(doc["systems"]))
        for metric in [m for m in ("bleu", "chrf", "comet", "off_target", "repetition")
                       if m in doc["run"]["metrics"] and m in base["run"]["metrics"]]:
            out[f"{tables.LABELS[metric]} change vs {base_label}"] = plots.delta_bars(
                doc, base, metric, base_label, new_label)
    return out


def save_plots(folder: Path, images: dict[str, bytes]) -> dict[str, str]:
    """PNG files for the Markdown report; returns title -> path relative to the report."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for title, png in images.items():
        name = safe_name(title.lower().replace(" ", "-")) + ".png"
        (folder / name).write_bytes(png)
        out[title] = f"{folder.name}/{name}"
    return out


def write_reports(run: RunDir, doc: dict[str, Any], baseline: str | None = None) -> dict[str, Path]:
    base_doc, delta = None, None
    if baseline:
        base_doc = single_system(read_scores(find_run(baseline)))
        doc_one = single_system(doc)
        delta = tables.delta_table(doc_one, base_doc)
    images = make_plots(single_system(doc) if base_doc else doc, base_doc,
                        base_doc["run"]["run_id"] if base_doc else "base")
    paths = save_plots(run.root / "plots", images)
    base_id = base_doc["run"]["run_id"] if base_doc else None
    md = run.root / "report.md"
    md.write_text(markdown.render(doc, paths, delta, base_id), encoding="utf-8")
    page = run.root / "report.html"
    page.write_text(html.render(doc, images, delta, base_id), encoding="utf-8")
    return {"json": run.scores, "markdown": md, "html": page}
