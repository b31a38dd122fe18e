"""Rows of parallel text, whatever the layout: two files, a TSV, or a multi-parallel folder.

A row is one line position with its text in every language of the source (and any rewrites, e.g. a formal
variant, where the folder has them), which is what the translation, interactive and preference builders need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.data import readers
from pipelines.data.inventory import SourceInfo


@dataclass(frozen=True)
class ParallelRow:
    line: int  # 1-based
    texts: dict[str, str]  # Flores code -> text
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # lang -> variant kind -> text
    files: dict[str, str] = field(default_factory=dict)  # Flores code -> display path


def read_rows(info: SourceInfo, start: int, stop: int, langs: list[str] | None = None) -> list[ParallelRow]:
    """Rows [start, stop) of a parallel source, restricted to `langs` (default: all its languages)."""
    if info.type == "tsv":
        f = info.files["main"]
        src, tgt = info.languages
        return [ParallelRow(line, {src: a, tgt: b}, {}, {src: f.display, tgt: f.display})
                for line, a, b in readers.read_tsv(f.path, start, stop)]
    if info.type == "parallel":
        files = {info.languages[0]: info.files["src"], info.languages[1]: info.files["tgt"]}
    else:
        files = {code: info.files[code] for code in (langs or info.languages)}
    columns = {code: readers.read_lines(f.path, start, stop) for code, f in files.items()}
    variant_columns = {
        (code, kind): dict(readers.read_lines(vf.path, start, stop))
        for code in files
        for kind, vf in info.variants.get(code, {}).items()
    }
    displays = {code: f.display for code, f in files.items()}
    rows = []
    for i in range(stop - start):
        line = start + i + 1
        texts = {code: col[i][1] for code, col in columns.items()}
        variants: dict[str, dict[str, str]] = {}
        for (code, kind), col in variant_columns.items():
            text = col.get(line, "")
            if text.strip():  # an empty line means "no rewrite for this sentence"
                variants.setdefault(code, {})[kind] = text
        rows.append(ParallelRow(line, texts, variants, displays))
    return rows
