"""Hypothesis files scored directly (`--hyp-dir`), e.g. the official WMT22 system outputs.

For each direction (`en-de`), three layouts are recognised, first match wins:

1. `DIR/en-de.txt`                  one system, named by `--model` or the folder
2. `DIR/en-de/systems/<system>.txt` many systems (the WMT22 layout: `--hyp-dir ../shared/data/wmt22`)
3. `DIR/<system>/en-de.txt`         many systems (a previous run's `hyps/` folder)
"""

from __future__ import annotations

from pathlib import Path

from evaluation.directions import Direction
from evaluation.loaders import DirectionData, LoaderError, read_lines


def _names(d: Direction) -> list[str]:
    return list(dict.fromkeys([d.key, f"{d.src}-{d.tgt}"]))


def discover(hyp_dir: Path, d: Direction, default_system: str) -> dict[str, Path]:
    if not hyp_dir.is_dir():
        raise LoaderError(f"{hyp_dir}: hypothesis folder not found")
    for name in _names(d):
        if (hyp_dir / f"{name}.txt").is_file():
            return {default_system: hyp_dir / f"{name}.txt"}
    for name in _names(d):
        systems = hyp_dir / name / "systems"
        if systems.is_dir():
            found = {p.stem: p for p in sorted(systems.glob("*.txt"))}
            if found:
                return found
    found = {}
    for sub in sorted(p for p in hyp_dir.iterdir() if p.is_dir()):
        for name in _names(d):
            if (sub / f"{name}.txt").is_file():
                found[sub.name] = sub / f"{name}.txt"
                break
    if found:
        return found
    raise LoaderError(
        f"{hyp_dir}: no hypotheses for {d.key}; expected {d.key}.txt, {d.key}/systems/<system>.txt "
        f"or <system>/{d.key}.txt"
    )


def load(hyp_dir: Path, data: list[DirectionData], default_system: str) -> dict[str, dict[str, tuple[Path, list[str]]]]:
    """{system: {direction key: (file, lines)}}; every file must have one line per segment."""
    out: dict[str, dict[str, tuple[Path, list[str]]]] = {}
    for dd in data:
        for system, path in discover(hyp_dir, dd.direction, default_system).items():
            lines = read_lines(path, allow_empty=True)
            if len(lines) != dd.total:
                where = f"; {path}:{len(lines) + 1}: missing" if len(lines) < dd.total else ""
                raise LoaderError(
                    f"{path}: {len(lines)} lines but the test set has {dd.total} segments for {dd.direction.key}"
                    + where
                )
            out.setdefault(system, {})[dd.direction.key] = (path, lines[: len(dd)])
    return out

