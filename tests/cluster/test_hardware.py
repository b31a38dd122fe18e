"""`dtype: auto`: bf16 only where the hardware multiplies bf16 natively (AMX, AVX-512 BF16, bf16 GPUs)."""

from __future__ import annotations

import pytest

from cluster.engine import EngineSettings, engine_kwargs
from cluster.hardware import choose_dtype, cpu_flags, matmul_gflops

AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "amx_int8"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})  # e.g. AMD Zen 4
NO_AMX = frozenset({"avx2", "avx512f", "avx512_vnni"})


def test_auto_on_cpu_follows_native_bf16():
    amx = choose_dtype("auto", use_gpu=False, flags=AMX)
    assert amx.dtype == "bfloat16" and "AMX" in amx.reason
    dot = choose_dtype("auto", use_gpu=False, flags=AVX512_BF16)
    assert dot.dtype == "bfloat16" and "avx512_bf16" in dot.reason
    plain = choose_dtype("auto", use_gpu=False, flags=NO_AMX)
    assert plain.dtype == "float32" and "without AMX" in plain.reason


def test_auto_on_gpu_follows_native_bf16():
    assert choose_dtype("auto", use_gpu=True, gpu_bf16=True).dtype == "bfloat16"
    assert choose_dtype("auto", use_gpu=True, gpu_bf16=False).dtype == "float32"
    # A GPU worker is judged by its GPU, whatever the CPU flags say.
    assert choose_dtype("auto", use_gpu=True, gpu_bf16=False, flags=AMX).dtype == "float32"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_explicit_dtype_is_kept(dtype):
    for flags in (AMX, AVX512_BF16, NO_AMX):
        choice = choose_dtype(dtype, use_gpu=False, flags=flags)
        assert choice.dtype == dtype and choice.reason == "set in the recipe"


def test_this_host_is_judged_by_its_own_flags():
    expected = "bfloat16" if {"amx_bf16", "avx512_bf16"} & cpu_flags() else "float32"
    assert choose_dtype("auto", use_gpu=False).dtype == expected


def test_matmul_probe_measures_both_dtypes():
    for dtype in ("float32", "bfloat16"):
        assert matmul_gflops(dtype, 1, n=128, repeats=1, min_seconds=0.01) > 0


def test_engine_passes_a_concrete_dtype_to_vllm():
    """vLLM's own "auto" means the checkpoint's dtype; xalign resolves auto before vLLM sees it."""
    kw = engine_kwargs(EngineSettings(), "/models/m")
    assert kw["dtype"] in ("float32", "bfloat16")
    assert engine_kwargs(EngineSettings(dtype="float32"), "/models/m")["dtype"] == "float32"
