"""Per-step training metrics: JSONL and TensorBoard in the run folder, throughput and an MFU estimate.

Rank 0 writes them. After a restart from a checkpoint at step s, rows past s are dropped from the
JSONL (and TensorBoard purges them), so a resumed run's curve has each step exactly once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Peak dense tensor FLOP/s per device (bf16, fp32/tf32), from the vendors' data sheets.
_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 494.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10G": (70.0, 35.0),
    "A10": (125.0, 62.5),
}


def peak_flops_per_worker(configured_tflops: float | None, use_gpu: bool, dtype: str) -> float | None:
    """The recipe's value, else the table's entry for this GPU; None (MFU unknown) on CPU."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if not use_gpu:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16, fp32) in _PEAK_TFLOPS.items():
        if key in name:
            return (bf16 if dtype == "bfloat16" else fp32) * 1e12
    return None


def train_flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: float, lora: bool,
                          reference_forward: bool = False) -> float:
    """Model FLOPs per trained token (PaLM appendix B): 6N + 12·L·d·T for full training.

    LoRA skips the frozen weights' gradients (about 4N); DPO with a frozen copy adds its forward (2N).
    """
    dense = (4 if lora else 6) * n_params
    attention = 12 * n_layers * hidden * seq_len
    if reference_forward:
        dense += 2 * n_params
        attention += 4 * n_layers * hidden * seq_len
    return dense + attention


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float | None, world_size: int) -> float | None:
    if not peak_flops:
        return None
    return flops_per_token * tokens_per_s / (peak_flops * world_size)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    """metrics.jsonl + TensorBoard events under the run folder (rank 0 only; others get a no-op)."""

    def __init__(self, run_dir: Path | None, resume_step: int = 0):
        self.enabled = run_dir is not None
        self._tb = None
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # a restart replays the steps after its checkpoint: keep each step once
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _clean(v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        step = row["step"]
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
