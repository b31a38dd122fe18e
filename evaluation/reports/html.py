"""A self-contained HTML report: the Markdown report's tables plus the plots inlined as PNG data URIs."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from evaluation.reports import tables
from evaluation.reports.markdown import generation_note
from evaluation.reports.tables import Table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; margin: 0.5em 0 1.5em; } code { background: #f3f3f3; padding: 1px 4px; }
"""


def html_table(table: Table) -> str:
    head, body = table

    def cell(c: str) -> str:
        numeric = c.replace(".", "", 1).replace("-", "", 1).replace("+", "", 1).isdigit()
        return f'<td class="num">{escape(c)}</td>' if numeric else f"<td>{escape(c)}</td>"

    rows = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in body)
    return f"<table><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr>{rows}</table>"


def render(doc: dict[str, Any], plots: dict[str, bytes], delta: Table | None = None, base_id: str | None = None,
           title: str | None = None, extra: dict[str, Table] | None = None) -> str:
    run = doc["run"]
    title = title or f"{run['suite']}: {', '.join(doc['systems'])}"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Run <code>{escape(run['run_id'])}</code> · test set <code>{escape(run['test_set']['path'])}</code> "
        f"({escape(run['test_set']['format'])}) · {len(run['directions'])} directions · "
        f"{run['segments_per_system']} segments per system · started {escape(run['started'])}"
        f"{escape(generation_note(run).replace('`', ''))}</p>",
        "<h2>Models</h2>", html_table(tables.identity_table(doc)),
    ]
    for heading, table in (extra or {}).items():
        parts += [f"<h2>{escape(heading)}</h2>", html_table(table)]
    parts += ["<h2>Averages</h2>", html_table(tables.aggregate_table(doc))]
    if delta is not None:
        parts += [f"<h2>Change against <code>{escape(base_id or '')}</code></h2>", html_table(delta)]
    for name, png in plots.items():
        data = base64.b64encode(png).decode()
        parts.append(f'<h3>{escape(name)}</h3><img alt="{escape(name)}" src="data:image/png;base64,{data}">')
    parts += ["<h2>Scores by direction</h2>", html_table(tables.direction_table(doc))]
    if "off_target" in run["metrics"]:
        parts += ["<h2>Off-target confusion</h2>", html_table(tables.confusion_table(doc))]
    if "repetition" in run["metrics"]:
        parts += ["<h2>Repetition loops</h2>", html_table(tables.repetition_table(doc))]
    parts += ["<h2>Signatures</h2>", html_table(tables.signature_table(doc))]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")
