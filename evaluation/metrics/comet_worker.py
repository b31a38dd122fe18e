"""The COMET worker: runs under `.venv-comet` (unbabel-comet needs transformers<5 and numpy<2).

Started by the COMET Ray actor as `<comet python> -m evaluation.metrics.comet_worker`, it speaks JSON
lines over stdin/stdout: `{"op": "load", "checkpoint": ...}`, `{"op": "predict", "samples": [...]}`,
each answered by one line `{"ok": true, ...}` or `{"ok": false, "error": ...}`. Only the standard
library and comet are imported here. Libraries print to stdout (Lightning tips, "Encoder model
frozen"), so the protocol gets a private copy of stdout and everything else goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _protocol_stream():
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # anything printed from now on lands in stderr
    sys.stdout = sys.stderr
    return out


class Worker:
    def __init__(self) -> None:
        self.model: Any = None
        self.info: dict[str, Any] = {}

    def load(self, checkpoint: str, local_files_only: bool = True) -> dict[str, Any]:
        import comet
        from comet import load_from_checkpoint

        self.model = load_from_checkpoint(checkpoint, local_files_only=local_files_only)
        self.model.eval()
        self.info = {
            "comet_version": comet.__version__,
            "class": type(self.model).__name__,
            "pretrained_model": str(self.model.hparams.get("pretrained_model")),
        }
        return self.info

    def predict(self, samples: list[dict[str, str]], batch_size: int = 16, gpus: int = 0) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("predict before load")
        if not samples:
            return {"scores": [], "system_score": None}
        pred = self.model.predict(
            samples, batch_size=batch_size, gpus=gpus, accelerator="gpu" if gpus else "cpu",
            progress_bar=False, num_workers=0,
        )
        return {"scores": [float(s) for s in pred.scores], "system_score": float(pred.system_score)}


def main() -> int:
    out = _protocol_stream()
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            op = msg.pop("op")
            if op == "load":
                reply = {"ok": True, "info": worker.load(**msg)}
            elif op == "predict":
                reply = {"ok": True, **worker.predict(**msg)}
            elif op == "ping":
                reply = {"ok": True}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # report every failure to the caller instead of dying silently
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
