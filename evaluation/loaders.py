"""Test-set loaders: Flores-200, WMT22, NTREX-128 and generic TSV/JSONL, all into one shape.

Every file is read strictly (UTF-8, one segment per line split on `\\n` only, so a U+2028 inside a
segment cannot shift the alignment) and every problem is a `LoaderError` naming the file and line.
Segments are kept verbatim: scores must be comparable with the official ones.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cluster import languages
from evaluation.directions import Direction, DirectionError


class LoaderError(ValueError):
    """A test set that cannot be read; the message starts with `file:line` where there is a line."""


@dataclass
class DirectionData:
    """One direction of a test set: aligned sources and one or more reference streams."""

    direction: Direction
    ids: list[str]
    sources: list[str]
    references: list[list[str]]  # references[k][i]: the k-th reference of segment i
    origin: dict[str, str] = field(default_factory=dict)  # file each stream came from (for reports)
    total: int = -1  # segments in the full test set, before a sample limit

    def __post_init__(self) -> None:
        n = len(self.sources)
        if self.total < 0:
            self.total = n
        if len(self.ids) != n or any(len(r) != n for r in self.references) or not self.references:
            raise LoaderError(f"{self.direction.key}: ids, sources and references are not aligned")

    def __len__(self) -> int:
        return len(self.sources)

    def head(self, limit: int | None) -> DirectionData:
        if limit is None or limit >= len(self):
            return self
        return DirectionData(self.direction, self.ids[:limit], self.sources[:limit],
                             [r[:limit] for r in self.references], self.origin, self.total)


def read_lines(path: Path, allow_empty: bool = False) -> list[str]:
    """Lines of a UTF-8 text file, verbatim but for a final newline; errors name file and line."""
    if not path.is_file():
        raise LoaderError(f"{path}: file not found")
    raw = path.read_bytes()
    if not raw:
        raise LoaderError(f"{path}: file is empty")
    parts = raw.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    out = []
    for i, part in enumerate(parts, 1):
        try:
            line = part.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise LoaderError(f"{path}:{i}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not allow_empty and not line.strip():
            raise LoaderError(f"{path}:{i}: empty line (every segment needs text)")
        out.append(line)
    return out


def _aligned(files: dict[str, Path], allow_empty: dict[str, bool] | None = None) -> dict[str, list[str]]:
    streams = {name: read_lines(p, (allow_empty or {}).get(name, False)) for name, p in files.items()}
    first_name = next(iter(streams))
    n = len(streams[first_name])
    for name, lines in streams.items():
        if len(lines) != n:
            short, long_ = (files[name], files[first_name]) if len(lines) < n else (files[first_name], files[name])
            raise LoaderError(
                f"{files[name]}: {len(lines)} lines but {files[first_name]} has {n}; "
                f"{short}:{min(len(lines), n) + 1}: missing (files must be line-aligned with {long_})"
            )
    return streams


# ---- Multi-parallel folders: Flores-200 (<code>.dev / .devtest) and NTREX-128 (<code>.txt) ---------------

def _parallel_files(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not root.is_dir():
        raise LoaderError(f"{root}: test-set folder not found")
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.suffix not in suffixes:
            continue
        try:
            found[languages.get(p.stem).flores] = p
        except languages.UnknownLanguageError:
            continue  # a language xalign has no table entry for; it cannot be asked for either
    if not found:
        raise LoaderError(f"{root}: no files named <flores code>{'|'.join(suffixes)}")
    return found


class ParallelFolder:
    """Flores-200 dev/devtest or NTREX-128: one file per language, every pair available."""

    def __init__(self, root: Path, suffixes: tuple[str, ...]) -> None:
        self.root = root
        self.files = _parallel_files(root, suffixes)

    def languages(self) -> list[str]:
        return list(self.files)

    def available(self) -> list[Direction]:
        return [Direction(s, t) for s in self.files for t in self.files if s != t]

    def load(self, d: Direction) -> DirectionData:
        for code in (d.src, d.tgt):
            if code not in self.files:
                raise LoaderError(f"{self.root}: no file for {code} (have: {', '.join(self.files)})")
        streams = _aligned({"src": self.files[d.src], "ref": self.files[d.tgt]})
        ids = [str(i) for i in range(len(streams["src"]))]
        ids_file = self.root / "ids.txt"
        if ids_file.is_file():  # dev_subset510: the Flores dev line each segment came from
            ids = _aligned({"src": self.files[d.src], "ids": ids_file})["ids"]
        return DirectionData(d, ids, streams["src"], [streams["ref"]],
                             {"source": str(self.files[d.src]), "reference": str(self.files[d.tgt])})


class Wmt22:
    """WMT22 general task: `<src>-<tgt>/src.txt`, `ref.txt` (primary) and `ref.<X>.txt` (more references)."""

    def __init__(self, root: Path, references: str = "primary") -> None:
        if not root.is_dir():
            raise LoaderError(f"{root}: test-set folder not found")
        self.root, self.references = root, references
        self.pairs: dict[Direction, Path] = {}
        for p in sorted(root.iterdir()):
            if p.is_dir() and (p / "src.txt").is_file():
                try:
                    self.pairs[Direction.parse(p.name)] = p
                except DirectionError:
                    continue
        if not self.pairs:
            raise LoaderError(f"{root}: no <src>-<tgt>/src.txt folders")

    def languages(self) -> list[str]:
        return sorted({c for d in self.pairs for c in (d.src, d.tgt)})

    def available(self) -> list[Direction]:
        return list(self.pairs)

    def load(self, d: Direction) -> DirectionData:
        if d not in self.pairs:
            have = ", ".join(x.key for x in self.pairs)
            raise LoaderError(f"{self.root}: no folder for {d.key} (have: {have})")
        folder = self.pairs[d]
        files = {"src": folder / "src.txt", "ref": folder / "ref.txt"}
        if self.references == "all":
            files.update({p.name: p for p in sorted(folder.glob("ref.*.txt"))})
        streams = _aligned(files)
        refs = [lines for name, lines in streams.items() if name != "src"]
        origin = {"source": str(files["src"]), "reference": ", ".join(str(p) for k, p in files.items() if k != "src")}
        return DirectionData(d, [str(i) for i in range(len(refs[0]))], streams["src"], refs, origin)


# ---- Generic files: one row per segment, with its languages -------------------------------------------------

REQUIRED_FIELDS = ("src_lang", "tgt_lang", "source", "reference")


def _generic_rows(path: Path, fmt: str) -> Iterable[tuple[int, dict]]:
    if not path.is_file():
        raise LoaderError(f"{path}: file not found")
    text_lines = read_lines(path, allow_empty=True)
    if fmt == "jsonl":
        for i, line in enumerate(text_lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoaderError(f"{path}:{i}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise LoaderError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row
        return
    reader = csv.reader(text_lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or not set(REQUIRED_FIELDS) <= set(header):
        raise LoaderError(f"{path}:1: header must name the columns {', '.join(REQUIRED_FIELDS)} (got {header})")
    for i, cells in enumerate(reader, 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise LoaderError(f"{path}:{i}: expected {len(header)} tab-separated columns, got {len(cells)}")
        row: dict = dict(zip(header, cells))
        refs = [row[h] for h in header if h == "reference" or h.startswith("reference_")]
        row["reference"] = refs if len(refs) > 1 else refs[0]
        yield i, row


class GenericFile:
    """A TSV (header row) or JSONL file of segments: src_lang, tgt_lang, source, reference [, id].

    `reference` may be a list in JSONL (several references); in TSV extra columns `reference_2`, ... do that.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        by_dir: dict[Direction, list[tuple[str, str, list[str]]]] = defaultdict(list)
        n_refs: dict[Direction, int] = {}
        for line, row in _generic_rows(path, fmt):
            missing = [k for k in REQUIRED_FIELDS if row.get(k) in (None, "", [])]
            if missing:
                raise LoaderError(f"{path}:{line}: missing {', '.join(missing)}")
            try:
                d = Direction.of(row["src_lang"], row["tgt_lang"])
            except (languages.UnknownLanguageError, DirectionError) as exc:
                raise LoaderError(f"{path}:{line}: {exc}") from None
            refs = row["reference"] if isinstance(row["reference"], list) else [row["reference"]]
            if not all(isinstance(x, str) and x.strip() for x in [row["source"], *refs]):
                raise LoaderError(f"{path}:{line}: source and reference must be non-empty strings")
            if n_refs.setdefault(d, len(refs)) != len(refs):
                raise LoaderError(f"{path}:{line}: {len(refs)} references, earlier {d.key} rows have {n_refs[d]}")
            by_dir[d].append((str(row.get("id", line)), row["source"], refs))
        if not by_dir:
            raise LoaderError(f"{path}: no segments")
        self.rows = dict(by_dir)

    def languages(self) -> list[str]:
        return sorted({c for d in self.rows for c in (d.src, d.tgt)})

    def available(self) -> list[Direction]:
        return list(self.rows)

    def load(self, d: Direction) -> DirectionData:
        if d not in self.rows:
            raise LoaderError(f"{self.path}: no segments for {d.key} (have: {', '.join(x.key for x in self.rows)})")
        rows = self.rows[d]
        refs = [[r[2][k] for r in rows] for k in range(len(rows[0][2]))]
        return DirectionData(d, [r[0] for r in rows], [r[1] for r in rows], refs,
                             {"source": str(self.path), "reference": str(self.path)})


TestSetReader = ParallelFolder | Wmt22 | GenericFile


def open_test_set(fmt: str, path: Path, references: str = "primary") -> TestSetReader:
    if fmt == "flores200":
        return ParallelFolder(path, (".dev", ".devtest"))
    if fmt == "ntrex128":
        return ParallelFolder(path, (".txt",))
    if fmt == "wmt22":
        return Wmt22(path, references)
    if fmt in ("tsv", "jsonl"):
        return GenericFile(path, fmt)
    raise LoaderError(f"test_set.format: unknown format {fmt!r}")
