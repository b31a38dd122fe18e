"""Which precision this host runs fast: `dtype: auto` in training, export, serving and evaluation.

bf16 pays off only where the hardware multiplies in bf16 natively: Intel AMX on CPUs (`amx_bf16`, about
8x the fp32 matmul rate of the same core) and bf16-capable GPUs. On a CPU without AMX, bf16 is emulated
or up-converted and runs no faster than fp32 (often slower), so `auto` keeps fp32 there. Hosts of one
cluster may differ, so the choice is made where the work runs (each training worker, each engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Precision = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class DtypeChoice:
    dtype: Precision
    reason: str


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this host (Linux `/proc/cpuinfo`; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cuda_bf16() -> bool | None:
    """True/False for a visible CUDA device's native bf16 support; None without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def choose_dtype(requested: str, *, use_gpu: bool | None = None, flags: frozenset[str] | None = None,
                 gpu_bf16: bool | None = None) -> DtypeChoice:
    """Resolve `requested` ("auto" or an explicit dtype) for this host.

    `use_gpu=None` means "whatever this process sees"; `flags` and `gpu_bf16` default to this host's and
    exist so the decision can be checked for hosts with and without fast bf16.
    """
    if requested != "auto":
        return DtypeChoice(requested, "set in the recipe")  # type: ignore[arg-type]
    if gpu_bf16 is None and use_gpu is not False:
        gpu_bf16 = cuda_bf16()
    if use_gpu is None:
        use_gpu = gpu_bf16 is not None
    if use_gpu:
        if gpu_bf16:
            return DtypeChoice("bfloat16", "GPU with native bf16")
        return DtypeChoice("float32", "GPU without native bf16")
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return DtypeChoice("bfloat16", "CPU with Intel AMX (amx_bf16): bf16 matmuls run on the tile units")
    return DtypeChoice("float32", "CPU without AMX: bf16 would be no faster than fp32 here")
