"""Per-direction generation checkpoints, so a rerun resumes from the directions that finished.

Generation writes `<run>/progress/<src>-<tgt>.jsonl` (atomically) the moment a direction's last segment
comes back. `resume=true` (`--resume RUN_ID`) keeps every finished direction whose segment ids match and
generates only the rest; `progress/state.json` pins what the checkpoints were made with (model weights,
test set, prompt, sampling), and a resume with anything else is refused rather than mixing two setups.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evaluation.outputs import RunDir, write_json
from evaluation.recipe import EvalRecipe

# Row fields worth keeping: everything the report and scoring read back.
_KEEP = ("idx", "direction", "id", "src", "tgt", "source", "style", "few_shot", "raw", "hypothesis", "worker_pid",
         "finish_reason", "prompt_tokens", "output_tokens")


class ResumeError(ValueError):
    pass


def setup(recipe: EvalRecipe, ident: dict[str, Any]) -> dict[str, Any]:
    """What decides the hypotheses: a checkpoint made with other values cannot be reused."""
    g = recipe.generation
    return {
        "model": ident.get("fingerprint") or ident.get("name"),
        "endpoint": recipe.endpoint.url and {"url": recipe.endpoint.url, "api": recipe.endpoint.api},
        "test_set": recipe.test_set.model_dump(), "data_root": recipe.data_root, "limit": recipe.limit,
        "prompt": {"style": g.prompt, "template": g.template, "shots": g.shots if g.prompt == "few_shot" else None},
        "sampling": {"max_tokens": g.max_tokens, "temperature": g.temperature, "seed": recipe.engine.seed,
                     "dtype": recipe.engine.dtype,
                     # only when on: checkpoints made before the setting existed (penalty off) stay resumable
                     **({"repetition_penalty": g.repetition_penalty} if g.repetition_penalty != 1.0 else {})},
    }


class Progress:
    def __init__(self, folder: Path, expected: dict[str, list[str]]) -> None:
        self.folder, self.expected = folder, expected

    @classmethod
    def open(cls, run: RunDir, recipe: EvalRecipe, ident: dict[str, Any], expected: dict[str, list[str]]) -> Progress:
        """Start a run's checkpoints, or (resume) check that the existing ones were made with this setup."""
        folder = run.root / "progress"
        state_file = folder / "state.json"
        want = setup(recipe, ident)
        if recipe.resume:
            if not state_file.is_file():
                raise ResumeError(f"resume: {run.root} has no generation checkpoints ({state_file} missing)")
            have = json.loads(state_file.read_text(encoding="utf-8"))
            differ = sorted(k for k in want | have if want.get(k) != have.get(k))
            if differ:
                raise ResumeError(f"resume {run.run_id}: the run was generated with other {', '.join(differ)} "
                                  f"({state_file}); start a new run instead")
        elif folder.exists():
            raise ResumeError(f"run {run.run_id} already exists ({run.root}); pass --resume {run.run_id} to finish "
                              "it, or choose another run_id")
        write_json(state_file, want)
        return cls(folder, expected)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.jsonl"

    def save(self, key: str, rows: list[dict[str, Any]]) -> None:
        tmp = self.path(key).with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({k: r[k] for k in _KEEP if k in r}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path(key))  # a direction is either complete on disk or absent

    def finished(self) -> dict[str, list[dict[str, Any]]]:
        """Directions whose checkpoint holds exactly the expected segments; others are generated again."""
        out = {}
        for key, ids in self.expected.items():
            p = self.path(key)
            if not p.is_file():
                continue
            rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
            if [str(r.get("id")) for r in rows] == [str(i) for i in ids]:
                out[key] = rows
        return out
