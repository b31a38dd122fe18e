"""Which precision this host runs fast: `dtype: auto` in training, export, serving and evaluation.

bf16 pays off only where the hardware multiplies in bf16 natively: Intel AMX on CPUs (`amx_bf16`, about
8x the fp32 matmul rate of the same core), AVX-512 BF16 dot products (`avx512_bf16`: AMD Zen 4 and later,
Intel Cooper Lake; measured 2.2x fp32 on a 2-core EPYC) and bf16-capable GPUs. On a CPU with neither, bf16 is
emulated or up-converted and runs slower than fp32 (a fifth of it on an AVX-512 Xeon without them), so `auto`
keeps fp32 there. The choice follows the CPU flags, not a timing, so every worker of one host decides alike
(DeepSpeed needs one dtype across ranks); `matmul_gflops` lets `xalign doctor` and the benchmarks confirm it.
Hosts of one cluster may differ, so the choice is made where the work runs (each training worker, each engine).
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
    if "avx512_bf16" in flags:
        return DtypeChoice("bfloat16", "CPU with AVX-512 BF16 (avx512_bf16): native bf16 dot products")
    return DtypeChoice("float32", "CPU without AMX or AVX-512 BF16: bf16 would be slower than fp32 here")


def matmul_gflops(dtype_name: str, threads: int, n: int = 1024, repeats: int = 5, min_seconds: float = 0.5) -> float:
    """This process's square-matmul rate in GFLOP/s at `threads` threads (best of `repeats` timed windows)."""
    import time

    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b  # warm-up: oneDNN picks and caches its kernel
        best = 0.0
        for _ in range(repeats):
            calls, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < min_seconds or calls < 2:
                a @ b
                calls += 1
            best = max(best, 2 * n**3 * calls / elapsed / 1e9)
        return best
    finally:
        torch.set_num_threads(before)
