"""A run's folder: per-direction generations (with prompt and model identity), hypotheses, scores.

```
<output_dir>/<run id>/
  recipe.resolved.yaml   run.json   scores.json   report.md   report.html
  generations/<system>/<src>-<tgt>.jsonl      one row per segment: id, source, references, prompt,
                                              raw output, hypothesis, sentence scores
  generations/<system>/<src>-<tgt>.meta.json  direction, model identity, prompt template, sampling
  hyps/<system>/<src>-<tgt>.txt               hypotheses, one per line (re-scorable with --hyp-dir)
```
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.locations import REPO_ROOT


class RunNotFoundError(FileNotFoundError):
    pass


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "model"


@dataclass
class RunDir:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    def generations(self, system: str, key: str) -> Path:
        return self.root / "generations" / safe_name(system) / f"{key}.jsonl"

    def meta(self, system: str, key: str) -> Path:
        return self.root / "generations" / safe_name(system) / f"{key}.meta.json"

    def hyps(self, system: str, key: str) -> Path:
        return self.root / "hyps" / safe_name(system) / f"{key}.txt"

    @property
    def scores(self) -> Path:
        return self.root / "scores.json"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_direction(run: RunDir, system: str, key: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    gen = run.generations(system, key)
    gen.parent.mkdir(parents=True, exist_ok=True)
    with gen.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(run.meta(system, key), meta)
    hyp = run.hyps(system, key)
    hyp.parent.mkdir(parents=True, exist_ok=True)
    hyp.write_text("".join(r["hypothesis"] + "\n" for r in rows), encoding="utf-8")


def find_run(spec: str | Path, output_dir: str | Path = "outputs/reports") -> RunDir:
    """A run by folder path or by id under the output folder (cwd-relative, then repo-relative)."""
    candidates = [Path(spec), Path(output_dir) / str(spec), REPO_ROOT / output_dir / str(spec)]
    for c in candidates:
        if (c / "scores.json").is_file():
            return RunDir(c.resolve())
    raise RunNotFoundError(f"run {spec!r} not found (looked for scores.json in {', '.join(map(str, candidates))})")


def read_scores(run: RunDir) -> dict[str, Any]:
    return json.loads(run.scores.read_text(encoding="utf-8"))


def read_generations(run: RunDir, system: str, key: str) -> list[dict[str, Any]]:
    path = run.generations(system, key)
    if not path.is_file():
        raise RunNotFoundError(f"{path}: generations missing for {system} {key}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
