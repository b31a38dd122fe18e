"""The driver's look at the inputs before any work starts: resolve paths, hash files, count and align lines.

One streaming pass per file (nothing is kept but counts and hashes). Line-aligned files whose line counts
differ are an error naming both files and both counts, before a single task runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cluster import languages
from cluster.config import RecipeError
from cluster.locations import resolve_data_path
from pipelines.data import readers
from pipelines.data.readers import InputError
from pipelines.data.recipe import MultiParallelSource, PrepareRecipe


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute, for tasks
    display: str  # data-root relative, for people and the manifest
    sha256: str
    lines: int


@dataclass
class SourceInfo:
    name: str
    type: str
    count: int  # positions a builder iterates over (after `limit`)
    files: dict[str, InputFile]  # role -> file: "main", "src"/"tgt", or a language's Flores code
    languages: list[str] = field(default_factory=list)  # Flores codes of parallel sources
    variants: dict[str, dict[str, InputFile]] = field(default_factory=dict)  # lang -> variant -> file

    def all_files(self) -> list[InputFile]:
        out = list(self.files.values())
        for per_lang in self.variants.values():
            out.extend(per_lang.values())
        return out


def _resolve(source: str, key: str, raw: str, want_dir: bool = False) -> Path:
    p = resolve_data_path(raw)
    if "flores200" in p.resolve().parts:
        raise RecipeError(f"sources.{source}.{key}: {raw} is Flores-200, the held-out evaluation set")
    if want_dir and not p.is_dir():
        raise RecipeError(f"sources.{source}.{key}: folder not found: {raw} (looked at {p})")
    if not want_dir and not p.is_file():
        raise RecipeError(f"sources.{source}.{key}: file not found: {raw} (looked at {p})")
    return p


def _file(path: Path) -> InputFile:
    sha, lines = readers.scan_file(path)
    display = readers.display_path(path)
    if lines == 0:
        raise InputError(f"{display}: empty file (0 lines): nothing to read; remove the source or fix the file")
    return InputFile(str(path.resolve()), display, sha, lines)


def _check_aligned(files: list[InputFile]) -> None:
    first = files[0]
    for other in files[1:]:
        if other.lines != first.lines:
            raise InputError(
                f"line counts differ: {first.display} has {first.lines} lines, {other.display} has {other.lines}"
            )


def _multi_parallel(name: str, cfg: MultiParallelSource) -> SourceInfo:
    folder = _resolve(name, "path", cfg.path, want_dir=True)
    if cfg.languages == "all":
        codes = []
        for f in sorted(folder.glob(f"*{cfg.suffix}")):
            stem = f.name[: -len(cfg.suffix)]
            if "." not in stem and languages.is_known(stem):
                codes.append(languages.get(stem).flores)
    else:
        codes = list(cfg.languages)
    if cfg.pivot not in codes:
        raise RecipeError(f"sources.{name}.pivot: {cfg.pivot} is not among the source's languages {codes}")
    if len(codes) < 2:
        raise RecipeError(f"sources.{name}.languages: a parallel source needs at least two languages")
    files, variants = {}, {}
    for code in codes:
        f = folder / f"{code}{cfg.suffix}"
        if not f.is_file():
            raise RecipeError(f"sources.{name}.languages: no file for {code}: {readers.display_path(f)} is missing")
        files[code] = _file(f)
        for v in cfg.variants:
            vf = folder / f"{code}.{v}{cfg.suffix}"
            if vf.is_file():
                variants.setdefault(code, {})[v] = _file(vf)
    aligned = list(files.values()) + [f for per in variants.values() for f in per.values()]
    _check_aligned(aligned)
    count = files[codes[0]].lines
    return SourceInfo(name, cfg.type, min(count, cfg.limit or count), files, codes, variants)


def scan_source(name: str, cfg) -> SourceInfo:
    if cfg.type == "multi_parallel":
        return _multi_parallel(name, cfg)
    if cfg.type == "parallel":
        src, tgt = _file(_resolve(name, "src_path", cfg.src_path)), _file(_resolve(name, "tgt_path", cfg.tgt_path))
        _check_aligned([src, tgt])
        return SourceInfo(name, cfg.type, min(src.lines, cfg.limit or src.lines), {"src": src, "tgt": tgt},
                          [cfg.src_lang, cfg.tgt_lang])
    path = _resolve(name, "path", cfg.path)
    main = _file(path)
    count = readers.count_positions(path) if cfg.type != "tsv" else main.lines
    if count == 0:
        raise InputError(f"{main.display}: no records (an empty JSON array)")
    langs = [cfg.src_lang, cfg.tgt_lang] if cfg.type == "tsv" else []
    return SourceInfo(name, cfg.type, min(count, cfg.limit or count), {"main": main}, langs)


def scan(recipe: PrepareRecipe) -> dict[str, SourceInfo]:
    """Every source a builder uses (unused sources are not read)."""
    used = {s for b in recipe.builders.values() for s in b.sources}
    return {name: scan_source(name, cfg) for name, cfg in recipe.sources.items() if name in used}


def input_files(infos: dict[str, SourceInfo]) -> list[InputFile]:
    seen: dict[str, InputFile] = {}
    for info in infos.values():
        for f in info.all_files():
            seen.setdefault(f.display, f)
    return [seen[k] for k in sorted(seen)]
