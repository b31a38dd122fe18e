"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions (both with SSE streaming), /v1/models.

Responses, chunks, usage and the model list are vLLM's protocol models; the requests are vLLM's narrowed to
what xalign serves (serving.openai_protocol). Prompts are encoded by xalign's prompt module and reach the
engine as token ids.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
)
from vllm.entrypoints.openai.completion.protocol import (
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from vllm.entrypoints.serve.engine.protocol import ModelCard, ModelList, UsageInfo
from vllm.exceptions import VLLMClientError

from serving import errors
from serving.context import ServerContext, deadline, engine_request_id, request_id, server
from serving.generation import Delta
from serving.openai_protocol import ChatCompletionRequest, CompletionRequest

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors.RESPONSES)
_STREAMED = {200: {"content": {"text/event-stream": {}}}}


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    gen = server(request).generator
    base = gen.base_name

    def card(name: str, parent: str | None = None) -> ModelCard:
        return ModelCard(id=name, created=gen.created, owned_by="xalign", root=base, parent=parent,
                         max_model_len=gen.max_model_len)

    return ModelList(data=[card(base), *(card(name, parent=base) for name in gen.adapters)])


def _params(ctx: ServerContext, req: ChatCompletionRequest | CompletionRequest, ids: list[int],
            max_tokens: int | None, param: str) -> Any:
    if req.n > ctx.recipe.limits.max_n:
        raise errors.invalid("n", f"n: {req.n} is above the limit {ctx.recipe.limits.max_n} (limits.max_n)")
    budget = ctx.generator.output_budget(ids, max_tokens, param)
    try:
        return req.to_sampling_params(budget, ctx.generator.sampling_defaults(req.ignore_eos))
    except (VLLMClientError, ValueError) as exc:  # vLLM's own checks, e.g. n > 1 with greedy decoding
        raise errors.from_vllm(exc, fields=type(req).model_fields) from exc


def usage(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=prompt_tokens + completion_tokens)


def _include_usage(req: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=_STREAMED)  # type: ignore[arg-type]
async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
    ctx = server(request)
    gen = ctx.generator
    lora = gen.lora_for(req.model)
    ids = gen.encode_chat(req.text_messages())
    gen.check_prompt(ids, "messages")
    params = _params(ctx, req, ids, *req.output_limit)
    rid, dl = engine_request_id(request), deadline(request)
    cid = f"chatcmpl-{request_id(request)}"
    if req.stream:
        return await _stream_response(request, ctx, [gen.stream(ids, params, lora, rid, dl)], len(ids), req.model,
                                      _ChatChunks(cid, req.model, _include_usage(req), len(ids)))
    g = await gen.generate(ids, params, lora, rid, dl)
    ctx.metrics.count_tokens(req.model, g.prompt_tokens, g.completion_tokens)
    choices = [ChatCompletionResponseChoice(index=o.index, message=ChatMessage(role="assistant", content=o.text),
                                            finish_reason=o.finish_reason) for o in g.outputs]
    return ChatCompletionResponse(id=cid, model=req.model, choices=choices,
                                  usage=usage(g.prompt_tokens, g.completion_tokens))


@router.post("/completions", response_model=CompletionResponse, responses=_STREAMED)  # type: ignore[arg-type]
async def completions(req: CompletionRequest, request: Request) -> Any:
    ctx = server(request)
    gen = ctx.generator
    lora = gen.lora_for(req.model)
    items = req.prompts()
    if len(items) > ctx.recipe.limits.max_batch_items:
        raise errors.invalid("prompt", f"prompt: {len(items)} prompts; the limit is "
                                       f"{ctx.recipe.limits.max_batch_items} (limits.max_batch_items)", status=413)
    encoded: list[list[int]] = []
    for i, p in enumerate(items):
        param = "prompt" if len(items) == 1 else f"prompt[{i}]"
        ids = gen.encode_text(p) if isinstance(p, str) else list(p)
        if not ids:
            raise errors.invalid(param, f"{param}: empty prompt")
        gen.check_prompt(ids, param)
        encoded.append(ids)
    params = [_params(ctx, req, ids, req.max_tokens, "max_tokens") for ids in encoded]
    dl = deadline(request)
    cid = f"cmpl-{request_id(request)}"
    echoes = [(p if isinstance(p, str) else gen.tokenizer.decode(p)) if req.echo else "" for p in items]
    if req.stream:
        streams = [gen.stream(ids, sp, lora, engine_request_id(request, f"-{i}"), dl)
                   for i, (ids, sp) in enumerate(zip(encoded, params))]
        prompt_tokens = sum(len(x) for x in encoded)
        writer = _CompletionChunks(cid, req.model, _include_usage(req), prompt_tokens, req.n, echoes)
        return await _stream_response(request, ctx, streams, prompt_tokens, req.model, writer)
    gens = await asyncio.gather(*(gen.generate(ids, sp, lora, engine_request_id(request, f"-{i}"), dl)
                                  for i, (ids, sp) in enumerate(zip(encoded, params))))
    choices = [CompletionResponseChoice(index=i * req.n + o.index, text=echoes[i] + o.text,
                                        finish_reason=o.finish_reason)
               for i, g in enumerate(gens) for o in g.outputs]
    total = usage(sum(g.prompt_tokens for g in gens), sum(g.completion_tokens for g in gens))
    ctx.metrics.count_tokens(req.model, total.prompt_tokens, total.completion_tokens or 0)
    return CompletionResponse(id=cid, model=req.model, choices=choices, usage=total)


# ---- streaming ------------------------------------------------------------------------------------


class _ChunkWriter:
    """Turns engine deltas (tagged with their prompt's position) into the JSON of SSE `data:` events. Chunks
    are serialized as vLLM's server does (fields set, not defaults), so each choice carries its
    finish_reason and logprobs keys, and the final usage chunk has no empty choice."""

    def __init__(self, cid: str, model: str, include_usage: bool, prompt_tokens: int) -> None:
        self.cid, self.model, self.include_usage, self.prompt_tokens = cid, model, include_usage, prompt_tokens
        self.created = int(time.time())
        self.opened: set[int] = set()

    def chunk(self, choices: list[Any], usage: UsageInfo | None = None) -> str:
        raise NotImplementedError

    def delta(self, source: int, d: Delta) -> list[str]:
        raise NotImplementedError

    def end(self, completion_tokens: int) -> list[str]:
        return [self.chunk([], usage(self.prompt_tokens, completion_tokens))] if self.include_usage else []


class _ChatChunks(_ChunkWriter):
    def chunk(self, choices: list[Any], usage: UsageInfo | None = None) -> str:
        c = ChatCompletionStreamResponse(id=self.cid, object="chat.completion.chunk", created=self.created,
                                         model=self.model, choices=choices)
        if usage is not None:
            c.usage = usage
        return c.model_dump_json(exclude_unset=True)

    def delta(self, source: int, d: Delta) -> list[str]:
        out = []

        def choice(delta: DeltaMessage, finish_reason: str | None = None) -> ChatCompletionResponseStreamChoice:
            return ChatCompletionResponseStreamChoice(index=d.index, delta=delta, logprobs=None,
                                                      finish_reason=finish_reason)

        if d.index not in self.opened:  # OpenAI opens each choice with the role
            self.opened.add(d.index)
            out.append(self.chunk([choice(DeltaMessage(role="assistant", content=""))]))
        if d.text or d.finish_reason:
            delta = DeltaMessage(content=d.text) if d.text else DeltaMessage()
            out.append(self.chunk([choice(delta, d.finish_reason)]))
        return out


class _CompletionChunks(_ChunkWriter):
    def __init__(self, cid: str, model: str, include_usage: bool, prompt_tokens: int, n: int,
                 echoes: list[str]) -> None:
        super().__init__(cid, model, include_usage, prompt_tokens)
        self.n, self.echoes = n, echoes

    def chunk(self, choices: list[Any], usage: UsageInfo | None = None) -> str:
        c = CompletionStreamResponse(id=self.cid, object="text_completion", created=self.created, model=self.model,
                                     choices=choices)
        if usage is not None:
            c.usage = usage
        return c.model_dump_json(exclude_unset=True)

    def delta(self, source: int, d: Delta) -> list[str]:
        index = source * self.n + d.index
        text = d.text
        if index not in self.opened:
            self.opened.add(index)
            text = self.echoes[source] + text
        if not text and not d.finish_reason:
            return []
        return [self.chunk([CompletionResponseStreamChoice(index=index, text=text, logprobs=None,
                                                           finish_reason=d.finish_reason)])]


async def _merge(streams: list[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Interleave several engine streams as their deltas arrive; an error in one ends them all."""
    if len(streams) == 1:
        async for d in streams[0]:
            yield 0, d
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, s: AsyncIterator[Delta]) -> None:
        try:
            async for d in s:
                await queue.put((i, d))
            await queue.put((i, done))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


async def _stream_response(request: Request, ctx: ServerContext, streams: list[AsyncIterator[Delta]],
                           prompt_tokens: int, model: str, writer: _ChunkWriter) -> StreamingResponse:
    """Start the engine before answering, so a failure at the first token is a proper 4xx/5xx status;
    later failures arrive as a final `data: {"error": ...}` event (the status line is already sent)."""
    merged = _merge(streams)
    started = time.perf_counter()
    try:
        first = await merged.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await merged.aclose()
        raise
    ctx.metrics.ttft.labels(route=request.url.path).observe(time.perf_counter() - started)
    rid = request_id(request)

    async def body() -> AsyncIterator[bytes]:
        tokens = 0
        try:
            if first is not None:
                tokens += first[1].tokens
                for chunk in writer.delta(*first):
                    yield _sse(chunk)
                async for source, d in merged:
                    tokens += d.tokens
                    for chunk in writer.delta(source, d):
                        yield _sse(chunk)
            for chunk in writer.end(tokens):
                yield _sse(chunk)
        except errors.APIError as exc:
            error = {"error": exc.body().model_dump(exclude_none=True), "request_id": rid}
            yield _sse(json.dumps(error, ensure_ascii=False, separators=(",", ":")))
        finally:
            await merged.aclose()
            ctx.metrics.count_tokens(model, prompt_tokens, tokens)
        yield _sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
