"""Rollouts for GRPO: a vLLM engine in a Ray actor samples groups of completions from the current policy.

The engine loads the base model once; after every optimizer step the learner saves its LoRA adapter (a few MB)
and the next rollout names it, so vLLM loads the new weights as a new adapter id (the previous one is evicted;
`max_loras` bounds how many stay resident). Prompts arrive as token ids encoded by `cluster.prompts`, exactly
what training and serving see. Colocated by default: the actor asks for no CPU of its own and takes turns with
the learner on the same cores (the learner waits while rollouts run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cluster.engine import EngineSettings, configure_process_env, engine_kwargs


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RolloutResult:
    groups: list[list[Sample]]  # per prompt, `n` samples
    seconds: float
    tokens: int  # completion tokens generated


class RolloutEngine:
    """The actor's body (wrapped with `ray.remote` by the driver, so placement stays in the recipe)."""

    def __init__(self, settings: EngineSettings, model_path: str, stop_token_ids: list[int]) -> None:
        configure_process_env(settings)
        from vllm import LLM

        self.llm = LLM(**engine_kwargs(settings, model_path))
        self.stop_token_ids = stop_token_ids
        self.current_lora: int | None = None

    def generate(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_p: float,
                 adapter: tuple[str, int, str] | None) -> RolloutResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        started = time.perf_counter()
        # No per-request seed: vLLM gives every one of a seeded request's `n` samples the same seed, and a group
        # of identical samples has no advantage to learn from. The engine's seed (EngineSettings.seed) makes a
        # run repeatable; a resumed run samples fresh groups.
        params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                stop_token_ids=self.stop_token_ids)
        lora = LoRARequest(lora_name=adapter[0], lora_int_id=adapter[1], lora_path=adapter[2]) if adapter else None
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                 lora_request=lora, use_tqdm=False)
        groups = [[Sample(o.text, list(o.token_ids), o.finish_reason) for o in sorted(out.outputs,
                                                                                      key=lambda o: o.index)]
                  for out in outs]
        tokens = sum(len(s.token_ids) for g in groups for s in g)
        return RolloutResult(groups, time.perf_counter() - started, tokens)

    def load_adapter(self, name: str, lora_id: int, path: str) -> float:
        """Load the learner's new adapter now (not lazily at the next rollout), so the sync is timed apart."""
        from vllm.lora.request import LoRARequest

        started = time.perf_counter()
        self.llm.llm_engine.add_lora(LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path))
        if self.current_lora is not None and self.current_lora != lora_id:
            self.llm.llm_engine.remove_lora(self.current_lora)  # the last policy's weights are never sampled again
        self.current_lora = lora_id
        return time.perf_counter() - started

    def ready(self) -> bool:
        return True


NAMESPACE = "xalign"


def start_engine(settings: EngineSettings, model_path: str, stop_token_ids: list[int], num_cpus: float,
                 num_gpus: float, name: str) -> Any:
    """The named rollout actor; workers find it with `find_engine(name)`."""
    import ray

    actor = ray.remote(RolloutEngine).options(name=name, namespace=NAMESPACE, num_cpus=num_cpus, num_gpus=num_gpus,
                                              max_restarts=0).remote(settings, model_path, stop_token_ids)
    ray.get(actor.ready.remote())
    return actor


def find_engine(name: str) -> Any:
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)
