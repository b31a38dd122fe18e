"""COMET (unbabel-comet `load_from_checkpoint` + `predict`), run from a Ray actor in the isolated environment.

unbabel-comet cannot share the main environment, so the actor starts `.venv-comet`'s interpreter
(`cluster.locations.comet_python()`, or `XALIGN_COMET_PYTHON`) on `evaluation.metrics.comet_worker` and
talks JSON lines with it. The model loads once per evaluation and scores every direction in one batch
stream. Nothing is downloaded when the checkpoint's encoder (its `pretrained_model`) is a local folder
or already in the Hugging Face cache; with `HF_HUB_OFFLINE=1` COMET is told to look only locally.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.locations import REPO_ROOT
from evaluation.metrics.base import Metric, MetricInput, MetricResult


class CometError(RuntimeError):
    pass


def checkpoint_file(path: str | Path) -> Path:
    """`.../checkpoints/model.ckpt`, given either that file or the model folder holding it."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / "model.ckpt"
    if not p.is_file():
        raise CometError(f"COMET checkpoint not found: {p} (give a model.ckpt or the folder with checkpoints/)")
    if not (p.parents[1] / "hparams.yaml").is_file():
        raise CometError(f"COMET checkpoint {p}: {p.parents[1] / 'hparams.yaml'} is missing")
    return p.resolve()


def checkpoint_sha(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:12]


class CometScorer:
    """Ray actor body: owns one COMET worker process for its lifetime."""

    def __init__(self, checkpoint: str, python: str, local_files_only: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONHOME", None)
        self.proc = subprocess.Popen(
            [python, "-m", "evaluation.metrics.comet_worker"], cwd=str(REPO_ROOT), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
        )
        self.info = self._call({"op": "load", "checkpoint": checkpoint, "local_files_only": local_files_only})["info"]

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise CometError(f"COMET worker exited (code {self.proc.wait()}); see the actor's stderr") from None
        line = self.proc.stdout.readline()
        if not line:
            raise CometError(f"COMET worker exited (code {self.proc.wait()}); see the actor's stderr")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CometError(f"COMET worker: {reply.get('error')}")
        return reply

    def model_info(self) -> dict[str, Any]:
        return self.info

    def predict(self, samples: list[dict[str, str]], batch_size: int, gpus: int) -> list[float]:
        return self._call({"op": "predict", "samples": samples, "batch_size": batch_size, "gpus": gpus})["scores"]

    def close(self) -> int:
        if self.proc.stdin:
            self.proc.stdin.close()
        return self.proc.wait(timeout=60)


class Comet(Metric):
    name = "comet"

    def __init__(self, checkpoint: str | Path, batch_size: int = 16, num_cpus: float = 1.0,
                 num_gpus: float = 0.0) -> None:
        self.checkpoint = checkpoint_file(checkpoint)
        self.batch_size, self.num_cpus, self.num_gpus = batch_size, num_cpus, num_gpus

    @classmethod
    def from_settings(cls, settings: Any) -> Comet:
        if not settings.comet_model:
            raise CometError("metrics.comet_model is not set (--comet-model PATH)")
        return cls(settings.comet_model, settings.comet_batch_size, settings.comet_num_cpus, settings.comet_num_gpus)

    def signature(self, info: dict[str, Any]) -> str:
        return (f"comet|model:{self.checkpoint.parents[1].name}|ckpt:{checkpoint_sha(self.checkpoint)}"
                f"|class:{info.get('class')}|nrefs:1|version:{info.get('comet_version')}")

    def score(self, data: MetricInput, sentence_level: bool = False) -> MetricResult:
        return self.score_many([data], sentence_level)[0]

    def score_many(self, data: Sequence[MetricInput], sentence_level: bool = False) -> list[MetricResult]:
        """One actor, one model load, every direction's segments in one stream (COMET uses the first reference)."""
        import ray

        from cluster.locations import comet_python

        python = comet_python()
        if not python.exists():
            raise CometError(f"COMET interpreter {python} not found; run cluster/setup.sh or set XALIGN_COMET_PYTHON")
        actor_cls = ray.remote(CometScorer).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        actor = actor_cls.remote(str(self.checkpoint), str(python), offline)
        try:
            info = ray.get(actor.model_info.remote())
            samples = [
                {"src": s, "mt": h, "ref": r}
                for d in data for s, h, r in zip(d.sources, d.hypotheses, d.references[0])
            ]
            scores = ray.get(actor.predict.remote(samples, self.batch_size, int(self.num_gpus > 0)))
            ray.get(actor.close.remote())
        finally:
            ray.kill(actor)
        signature = self.signature(info)
        out, start = [], 0
        for d in data:
            seg = scores[start:start + len(d.hypotheses)]
            start += len(d.hypotheses)
            system = sum(seg) / len(seg) if seg else 0.0
            out.append(MetricResult(self.name, system, signature, seg if sentence_level else None,
                                    {"pretrained_model": info.get("pretrained_model")}))
        return out
