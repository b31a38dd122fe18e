"""The vLLM engine of one Serve replica: `AsyncLLM` with xalign's prompt encoding and LoRA adapters by name.

Prompts reach vLLM as token ids encoded by `cluster.prompts` (the chat template exported with the
checkpoint is xalign's), so what is served is exactly what was trained. Every generation runs under a
deadline; whatever ends it early (deadline, client disconnect, engine error) aborts it in the engine, so no
work is left queued. Engine failures surface as `APIError`s (5xx), never as hangs; the engine refusing a
request is a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.engine import configure_process_env, engine_kwargs
from cluster.tokenizer import stop_token_ids
from serving import errors
from serving.recipe import ServeRecipe

log = logging.getLogger("ray.serve.xalign")  # Serve writes it to the replica log


@dataclass
class Output:
    index: int
    text: str
    tokens: int
    finish_reason: str | None


@dataclass
class Generation:
    outputs: list[Output]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(o.tokens for o in self.outputs)


@dataclass
class Delta:
    index: int
    text: str
    tokens: int  # new tokens in this delta
    finish_reason: str | None


class Deadline:
    """A request's time budget, shared by every generation it makes (a guard retry included)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.expires - time.monotonic()
        if left <= 0:
            raise errors.timeout(self.seconds)
        return left


class TemplateMismatchError(RuntimeError):
    pass


class Generator:
    """Owns the engine, the tokenizer and the adapter table of one replica."""

    def __init__(self, recipe: ServeRecipe) -> None:
        configure_process_env(recipe.engine)  # before vLLM is imported in this process
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        from cluster.models import resolve_model

        self.recipe = recipe
        self.base_name = recipe.base_model_name
        self.model_path = resolve_model(recipe.engine.model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        check_chat_template(self.tokenizer, self.model_path)
        self.adapters: dict[str, Any] = {}
        for i, (name, path) in enumerate(sorted(recipe.adapters.items()), start=1):
            folder = check_adapter(name, path, recipe.engine.max_lora_rank)
            self.adapters[name] = LoRARequest(lora_name=name, lora_int_id=i, lora_path=str(folder))
        self.stop_token_ids = stop_token_ids(self.tokenizer, self.model_path)
        self.default_temperature = default_temperature(self.model_path)
        self.max_model_len = recipe.engine.max_model_len
        args = AsyncEngineArgs(**engine_kwargs(recipe.engine, str(self.model_path)), disable_log_stats=True,
                               enable_log_requests=False)
        started = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(args)
        self.created = int(time.time())
        log.info("engine for %s ready in %.1f s (%d adapters)", self.base_name, time.monotonic() - started,
                 len(self.adapters))

    async def load_adapters(self) -> None:
        """Load every adapter at start, so a broken one fails the deployment rather than a request."""
        for name, req in self.adapters.items():
            try:
                await self.engine.add_lora(req)
            except Exception as exc:
                raise RuntimeError(f"adapters.{name}: vLLM could not load {req.lora_path}: {exc}") from exc

    # ---- names and prompts -------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def lora_for(self, model: str | None, param: str = "model") -> Any:
        if model is None or model == self.base_name:
            return None
        if model in self.adapters:
            return self.adapters[model]
        raise errors.not_found(param, f"model {model!r} is not served here (available: "
                                      f"{', '.join(self.model_names())})")

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        from cluster import prompts

        return prompts.encode_prompt(self.tokenizer, messages)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def check_prompt(self, ids: list[int], param: str) -> None:
        limit = self.recipe.limits.max_input_tokens
        if len(ids) > limit:
            raise errors.invalid(param, f"{param}: the prompt is {len(ids)} tokens; the limit is {limit} "
                                        "(limits.max_input_tokens)")
        vocab = len(self.tokenizer)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise errors.invalid(param, f"{param}: token id {bad} is outside the vocabulary (0..{vocab - 1})")

    def output_budget(self, ids: list[int], requested: int | None, param: str = "max_tokens") -> int:
        limits = self.recipe.limits
        room = self.max_model_len - len(ids)
        if requested is None:
            return max(1, min(limits.default_max_tokens, room))
        if requested > limits.max_output_tokens:
            raise errors.invalid(param, f"{param}: {requested} is above the limit {limits.max_output_tokens} "
                                        "(limits.max_output_tokens)")
        if requested > room:
            raise errors.invalid(param, f"{param}: the prompt ({len(ids)} tokens) plus {requested} new tokens exceed "
                                        f"the context of {self.max_model_len} tokens")
        return requested

    def sampling_defaults(self, ignore_eos: bool = False) -> dict[str, Any]:
        """The server's side of vLLM's `to_sampling_params` (a request's own value wins): the checkpoint's
        temperature, the recipe's repetition penalty (`sampling.repetition_penalty`), and answers that end at the
        end of turn as trained ones did (unless the request ignores EOS, e.g. a benchmark)."""
        return {"temperature": self.default_temperature,
                "repetition_penalty": self.recipe.sampling.repetition_penalty,
                "stop_token_ids": [] if ignore_eos else list(self.stop_token_ids)}

    def sampling(self, *, max_tokens: int, temperature: float | None = None,
                 repetition_penalty: float | None = None) -> Any:
        """Parameters for one translation answer: all of it at once, greedy and with the server's repetition
        penalty unless the request says otherwise."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        defaults = self.sampling_defaults()
        return SamplingParams(n=1, max_tokens=max_tokens,
                              temperature=defaults["temperature"] if temperature is None else temperature,
                              repetition_penalty=(defaults["repetition_penalty"] if repetition_penalty is None
                                                  else repetition_penalty),
                              stop_token_ids=defaults["stop_token_ids"], output_kind=RequestOutputKind.FINAL_ONLY)

    # ---- generation --------------------------------------------------------------------------------

    async def generate(self, ids: list[int], params: Any, lora: Any, request_id: str,
                       deadline: Deadline) -> Generation:
        from vllm.inputs import TokensPrompt

        progress = {"outputs": 0}

        async def run() -> Generation:
            final = None
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id,
                                                  lora_request=lora):
                final = out
                progress["outputs"] += 1
            if final is None:
                raise errors.engine_failure("the engine returned no output", dead=False)
            outs = [Output(o.index, o.text, len(o.token_ids), o.finish_reason) for o in final.outputs]
            return Generation(sorted(outs, key=lambda o: o.index), len(ids))

        done = False
        try:
            with engine_errors(progress):
                result = await _bounded(run(), deadline)
            done = True
            return result
        finally:
            if not done:
                await self.abort(request_id)

    async def stream(self, ids: list[int], params: Any, lora: Any, request_id: str,
                     deadline: Deadline) -> AsyncIterator[Delta]:
        from vllm.inputs import TokensPrompt

        gen = self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id, lora_request=lora)
        progress = {"outputs": 0}
        done = False
        try:
            while True:
                with engine_errors(progress):
                    try:
                        out = await _bounded(gen.__anext__(), deadline)
                    except StopAsyncIteration:
                        done = True
                        return
                progress["outputs"] += 1
                for o in out.outputs:
                    yield Delta(o.index, o.text, len(o.token_ids), o.finish_reason)
        finally:
            await gen.aclose()  # aborts the request in the engine if it is still running
            if not done:
                await self.abort(request_id)

    async def abort(self, request_id: str) -> None:
        """Abort a request that did not finish, whatever ended it. vLLM aborts on cancellation itself, but not
        when `add_request` fails after the request was registered (e.g. the engine's transport refuses a
        value): without this, such a request stays in the engine's queue for the replica's lifetime."""
        try:
            await self.engine.abort(request_id)
        except Exception as exc:  # a dead engine has nothing left to abort
            log.warning("could not abort request %s: %r", request_id, exc)

    # ---- health ------------------------------------------------------------------------------------

    @property
    def dead(self) -> bool:
        return bool(self.engine.errored)

    def unfinished(self) -> int:
        try:
            return int(self.engine.get_num_unfinished_requests())
        except Exception:  # the engine's client is gone: nothing is queued any more
            return 0

    async def check_health(self) -> None:
        if self.dead:
            raise RuntimeError("the vLLM engine is dead")
        await self.engine.check_health()

    def shutdown(self) -> None:
        self.engine.shutdown()


async def _bounded(awaitable: Any, deadline: Deadline) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout=deadline.remaining())
    except asyncio.TimeoutError:
        raise errors.timeout(deadline.seconds) from None


@contextmanager
def engine_errors(progress: dict[str, int] | None = None) -> Iterator[None]:
    """vLLM's exceptions -> APIError: request faults are 4xx, engine faults 5xx, a dead engine 503.

    A ValueError/TypeError/OverflowError raised before the engine produced anything is the engine refusing
    the request itself (its input processing and validation run in `add_request`): a 422, not a 500."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    try:
        yield
    except (errors.APIError, asyncio.CancelledError):
        raise
    except VLLMClientError as exc:
        raise errors.from_vllm(exc, status=400) from exc
    except Exception as exc:
        dead = isinstance(exc, EngineDeadError) or isinstance(exc.__cause__, EngineDeadError)
        # vLLM wraps what it did not expect in EngineGenerateError; the cause says what happened.
        cause = exc.__cause__ if isinstance(exc, EngineGenerateError) and exc.__cause__ is not None else exc
        refused = (not dead and isinstance(cause, (ValueError, TypeError, OverflowError))
                   and not (progress or {}).get("outputs"))
        if refused:
            log.warning("engine refused a request: %r", exc)
            raise errors.invalid(None, f"the engine refused the request: {str(cause)[:300]}") from exc
        log.error("engine failure (%s): %r", "dead" if dead else "request", exc)
        raise errors.engine_failure(str(exc)[:300] or type(exc).__name__, dead=dead) from exc


def check_chat_template(tokenizer: Any, model_path: Path) -> None:
    """Serve only checkpoints whose exported template is xalign's (or that have none, like a base model)."""
    from cluster import prompts

    template = getattr(tokenizer, "chat_template", None)
    if template and template != prompts.CHAT_TEMPLATE:
        raise TemplateMismatchError(
            f"{model_path}: the tokenizer's chat_template is not xalign's; prompts are encoded by "
            "cluster.prompts, so export the model with cluster.models.attach_chat_template"
        )
    missing = [t for t in prompts.SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        raise TemplateMismatchError(f"{model_path}: the tokenizer lacks the turn markers {missing}")


def check_adapter(name: str, path: str, max_rank: int) -> Path:
    from cluster import storage

    folder = storage.fetch_dir(path) if storage.is_uri(path) else Path(path).expanduser()
    cfg_file = folder / "adapter_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"adapters.{name}: {folder} has no adapter_config.json (not a PEFT LoRA folder)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("trainable_token_indices"):
        # vLLM's LoRA loader takes only the low-rank matrices: the trained embedding rows would be lost.
        raise ValueError(f"adapters.{name}: {folder} also trains embedding rows (lora.trainable_tokens), which "
                         "vLLM's LoRA support cannot load; serve the merged model (export/model) instead")
    rank = int(cfg.get("r", 0))
    if rank > max_rank:
        raise ValueError(f"adapters.{name}: LoRA rank {rank} exceeds engine.max_lora_rank={max_rank}")
    return folder.resolve()


def default_temperature(model_path: Path) -> float:
    """Greedy unless the checkpoint's generation config asks for sampling."""
    cfg = model_path / "generation_config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("do_sample"):
        return float(json.loads(cfg.read_text()).get("temperature", 1.0))
    return 0.0
