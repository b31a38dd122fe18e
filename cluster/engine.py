"""vLLM engine settings shared by serving (AsyncLLM in a Serve replica) and batch evaluation (LLM in
Ray Data actors): one place for the CPU/GPU differences, so both run the model the same way.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from cluster.config import Strict
from cluster.hardware import DtypeChoice, choose_dtype


class EngineSettings(Strict):
    model: str = "default"  # anything cluster.models.resolve_model accepts
    # auto: bf16 where the engine's host multiplies bf16 natively (AMX or AVX-512 BF16 CPU, bf16 GPU), else fp32
    # (cluster.hardware); resolved in the engine's own process, not by vLLM's "auto" (the config's dtype).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(1024, gt=16)
    max_num_seqs: int = Field(32, gt=0)
    kv_cache_gib: float = Field(1.0, gt=0)  # CPU only: VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool = True  # compiled mode is faster on CPU but costs ~2 min at start
    enable_lora: bool = False
    max_loras: int = Field(4, gt=0)
    max_lora_rank: int = Field(16, gt=0)
    seed: int = 0


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def configure_process_env(settings: EngineSettings) -> None:
    """Environment vLLM reads at engine start; must run in the engine's process before vLLM imports."""
    if not on_gpu():
        if float(settings.kv_cache_gib).is_integer():
            # vLLM parses this legacy variable as whole GiB; fractions reach it as `kv_cache_memory_bytes`.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(settings.kv_cache_gib)))
        # In-process engine core: starts in seconds instead of spawning a second process per engine.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def engine_dtype(settings: EngineSettings) -> DtypeChoice:
    return choose_dtype(settings.dtype)


def engine_kwargs(settings: EngineSettings, model_path: str) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` and `vllm.AsyncEngineArgs` alike."""
    kw: dict[str, Any] = {
        "model": model_path, "tokenizer": model_path, "dtype": engine_dtype(settings).dtype,
        "max_model_len": settings.max_model_len, "max_num_seqs": settings.max_num_seqs,
        "enforce_eager": settings.enforce_eager, "seed": settings.seed,
        "distributed_executor_backend": "uni",
    }
    if not on_gpu():
        kw["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * 2**30)
        # vLLM's CPU worker cannot rewind a seeded request's generator when a chunked prefill discards its sampled
        # token ("CPU Generator does not use offset"): the engine dies, and every request in flight with it. Whole
        # prefills avoid that (tests/cluster/test_engine.py::test_seeded_requests_beyond_one_prefill_chunk).
        kw["enable_chunked_prefill"] = False
    if settings.enable_lora:
        kw.update(enable_lora=True, max_loras=settings.max_loras, max_lora_rank=settings.max_lora_rank)
    return kw
