"""The vLLM settings every engine of xalign shares (serving, evaluation, GRPO rollouts), on the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_seeded_requests_beyond_one_prefill_chunk(tiny_model: Path, monkeypatch: pytest.MonkeyPatch):
    """Seeded sampling whose prompts together exceed one scheduler step (4096 tokens), as a loaded server with
    serve-default's 32 sequences of up to 768 prompt tokens sees: with chunked prefill, vLLM's CPU worker failed
    rewinding a chunked request's seeded generator ("CPU Generator does not use offset") and the engine died,
    failing every request in flight. cluster/engine.py turns chunked prefill off on CPU."""
    from cluster.engine import EngineSettings, configure_process_env, engine_kwargs

    for var, value in (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("VLLM_CPU_KVCACHE_SPACE", "1"),
                       ("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(var, value)  # what configure_process_env would set, restored after the test
    settings = EngineSettings(model=str(tiny_model), dtype="float32", max_model_len=512, max_num_seqs=32,
                              kv_cache_gib=1)
    configure_process_env(settings)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(**engine_kwargs(settings, str(tiny_model)))
    try:
        prompts = [TokensPrompt(prompt_token_ids=[(i + k) % 900 + 5 for i in range(380)]) for k in range(12)]
        outs = llm.generate(prompts, SamplingParams(n=2, max_tokens=4, temperature=1.0, seed=7), use_tqdm=False)
        assert [len(o.outputs) for o in outs] == [2] * 12
        assert all(len(c.token_ids) == 4 for o in outs for c in o.outputs)
    finally:
        del llm
