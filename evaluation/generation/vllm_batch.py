"""Offline batch inference: Ray Data streams request batches to actors that each hold a vLLM engine.

The engine is configured by `cluster.engine` exactly as serving configures it; prompts are encoded with
`cluster.prompts` and sent to vLLM as token ids. Batch size and the number of engine actors
(concurrency) come from the recipe. An actor that dies (OOM kill, crash) is restarted by Ray Data's actor
pool and its in-flight batch retried (`generation.max_restarts`), so one lost engine costs a restart, not
the suite. Results stream back: each direction is handed to `on_direction` as soon as its last segment
arrives, which is what lets an interrupted run resume from its finished directions.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cluster.engine import EngineSettings
from cluster.tokenizer import stop_token_ids
from evaluation.generation.requests import clean, encode_row, stop_strings
from evaluation.recipe import GenerationSettings

# The class name shows up in Ray's actor table as MapWorker(MapBatches(VLLMTranslator)).
ACTOR_NAME = "VLLMTranslator"


class VLLMTranslator:
    """A Ray Data map_batches UDF: one vLLM engine per actor, reused for every batch."""

    def __init__(self, model_path: str, engine: dict[str, Any], generation: dict[str, Any]) -> None:
        from cluster.engine import configure_process_env, engine_kwargs

        settings = EngineSettings.model_validate(engine)
        self.gen = GenerationSettings.model_validate(generation)
        configure_process_env(settings)  # before vLLM is imported in this process
        from transformers import AutoTokenizer
        from vllm import LLM, SamplingParams

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.llm = LLM(**engine_kwargs(settings, model_path))
        self.params = {
            style: SamplingParams(
                max_tokens=self.gen.max_tokens, temperature=self.gen.temperature, seed=settings.seed,
                repetition_penalty=self.gen.repetition_penalty,
                stop=stop_strings(style), stop_token_ids=stop_token_ids(self.tokenizer, model_path),
            )
            for style in ("chat", "few_shot")
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.time()
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        ids = [encode_row(self.tokenizer, r, self.gen.template) for r in rows]
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], self.params[self.gen.prompt],
                                 use_tqdm=False)
        raw = [o.outputs[0].text for o in outs]
        batch["raw"] = np.array(raw, dtype=object)
        batch["hypothesis"] = np.array([clean(t) for t in raw], dtype=object)
        batch["finish_reason"] = np.array([str(o.outputs[0].finish_reason) for o in outs], dtype=object)
        batch["prompt_tokens"] = np.array([len(x) for x in ids])
        batch["output_tokens"] = np.array([len(o.outputs[0].token_ids) for o in outs])
        # Batch wall-clock span: generation time without engine start-up, for run.json and benchmarks.
        batch["batch_start"] = np.full(len(rows), started)
        batch["batch_end"] = np.full(len(rows), time.time())
        batch["worker_pid"] = np.full(len(rows), os.getpid())  # shows a restarted actor in the outputs
        return batch


def generate(rows: list[dict[str, Any]], model_path: str, engine: EngineSettings, generation: GenerationSettings,
             on_direction: Callable[[str, list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Translate every request row; returns the rows with hypotheses, in `idx` order."""
    import ray

    if not rows:
        return []
    expected = Counter(r["direction"] for r in rows)
    ds = ray.data.from_items(rows)
    # Ray Data's actor pool already restarts actors and retries their tasks without limit (max_restarts=-1,
    # max_task_retries=-1); only a different limit is passed, through the (deprecated) remote-args path.
    restarts = {} if generation.max_restarts == -1 else {
        "max_restarts": generation.max_restarts, "max_task_retries": -1 if generation.max_restarts else 0}
    ds = ds.map_batches(
        VLLMTranslator,
        fn_constructor_kwargs={"model_path": model_path, "engine": engine.model_dump(),
                               "generation": generation.model_dump()},
        batch_size=generation.batch_size, concurrency=generation.concurrency,
        num_cpus=generation.num_cpus, num_gpus=generation.num_gpus or None, **restarts,
    )
    out: list[dict[str, Any]] = []
    pending: dict[str, list[dict[str, Any]]] = {}
    with tqdm(total=len(rows), desc="generate", unit="seg") as bar:
        for row in ds.iter_rows():
            row = _plain(row)
            out.append(row)
            bar.update(1)
            key = row["direction"]
            pending.setdefault(key, []).append(row)
            if len(pending[key]) == expected[key] and on_direction is not None:
                on_direction(key, sorted(pending.pop(key), key=lambda r: r["idx"]))
    out.sort(key=lambda r: r["idx"])
    if [r["idx"] for r in out] != [r["idx"] for r in rows]:
        raise RuntimeError(f"generation returned {len(out)} rows for {len(rows)} requests")
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
