"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions (both with SSE streaming), /v1/models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from serving import errors
from serving.context import ServerContext, deadline, engine_request_id, request_id, server
from serving.generation import Deadline, Delta
from serving.schemas import (
    ChatChoice,
    ChatChoiceMessage,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
)

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors.RESPONSES)


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    gen = server(request).generator
    base = gen.base_name
    cards = [ModelCard(id=base, created=gen.created, root=base)]
    cards += [ModelCard(id=name, created=gen.created, root=base, parent=base) for name in gen.adapters]
    return ModelList(data=cards)


def _params(ctx: ServerContext, req: SamplingFields, ids: list[int], max_tokens: int | None, param: str) -> Any:
    if req.n > ctx.recipe.limits.max_n:
        raise errors.invalid("n", f"n: {req.n} is above the limit {ctx.recipe.limits.max_n} (limits.max_n)")
    budget = ctx.generator.output_budget(ids, max_tokens, param)
    return ctx.generator.sampling(
        max_tokens=budget, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, n=req.n,
        stop=req.stop, seed=req.seed, presence_penalty=req.presence_penalty,  # type: ignore[arg-type]
        frequency_penalty=req.frequency_penalty, repetition_penalty=req.repetition_penalty,
        ignore_eos=req.ignore_eos, stream=req.stream,
    )


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}}})
async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
    ctx = server(request)
    gen = ctx.generator
    lora = gen.lora_for(req.model)
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    ids = gen.encode_chat(messages)
    gen.check_prompt(ids, "messages")
    limit_param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    params = _params(ctx, req, ids, req.output_limit, limit_param)
    rid, dl = engine_request_id(request), deadline(request)
    cid = f"chatcmpl-{request_id(request)}"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream_response(request, ctx, [gen.stream(ids, params, lora, rid, dl)], dl, len(ids),
                                      req.model, _ChatChunks(cid, req.model, include_usage, len(ids)))
    g = await gen.generate(ids, params, lora, rid, dl)
    ctx.metrics.count_tokens(req.model, g.prompt_tokens, g.completion_tokens)
    usage = Usage()
    usage.add(g.prompt_tokens, g.completion_tokens)
    choices = [ChatChoice(index=o.index, message=ChatChoiceMessage(content=o.text), finish_reason=o.finish_reason)
               for o in g.outputs]
    return ChatCompletion(id=cid, model=req.model, choices=choices, usage=usage)


@router.post("/completions", response_model=Completion, responses={200: {"content": {"text/event-stream": {}}}})
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
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        streams = [gen.stream(ids, sp, lora, engine_request_id(request, f"-{i}"), dl)
                   for i, (ids, sp) in enumerate(zip(encoded, params))]
        prompt_tokens = sum(len(x) for x in encoded)
        writer = _CompletionChunks(cid, req.model, include_usage, prompt_tokens, req.n, echoes)
        return await _stream_response(request, ctx, streams, dl, prompt_tokens, req.model, writer)
    gens = await asyncio.gather(*(gen.generate(ids, sp, lora, engine_request_id(request, f"-{i}"), dl)
                                  for i, (ids, sp) in enumerate(zip(encoded, params))))
    usage = Usage()
    choices = []
    for i, g in enumerate(gens):
        usage.add(g.prompt_tokens, g.completion_tokens)
        choices += [CompletionChoice(index=i * req.n + o.index, text=echoes[i] + o.text, finish_reason=o.finish_reason)
                    for o in g.outputs]
    ctx.metrics.count_tokens(req.model, usage.prompt_tokens, usage.completion_tokens)
    return Completion(id=cid, model=req.model, choices=choices, usage=usage)


# ---- streaming ------------------------------------------------------------------------------------


class _ChunkWriter:
    """Turns engine deltas (tagged with their prompt's position) into SSE `data:` payloads."""

    def __init__(self, cid: str, model: str, include_usage: bool, prompt_tokens: int) -> None:
        self.cid, self.model, self.include_usage, self.prompt_tokens = cid, model, include_usage, prompt_tokens
        self.created = int(time.time())
        self.opened: set[int] = set()

    def delta(self, source: int, d: Delta) -> list[dict]:
        raise NotImplementedError

    def usage_chunk(self, usage: Usage) -> dict:
        raise NotImplementedError

    def end(self, completion_tokens: int) -> list[dict]:
        if not self.include_usage:
            return []
        u = Usage()
        u.add(self.prompt_tokens, completion_tokens)
        return [self.usage_chunk(u)]


class _ChatChunks(_ChunkWriter):
    def chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> dict:
        c = ChatCompletionChunk(id=self.cid, created=self.created, model=self.model, choices=choices, usage=usage)
        return c.model_dump(exclude={"usage"} if usage is None else set())

    def delta(self, source: int, d: Delta) -> list[dict]:
        out = []
        if d.index not in self.opened:  # OpenAI opens each choice with the role
            self.opened.add(d.index)
            out.append(self.chunk([ChatChunkChoice(index=d.index, delta=ChatDelta(role="assistant", content=""))]))
        if d.text or d.finish_reason:
            out.append(self.chunk([ChatChunkChoice(index=d.index, delta=ChatDelta(content=d.text or None),
                                                   finish_reason=d.finish_reason)]))
        return out

    def usage_chunk(self, usage: Usage) -> dict:
        return self.chunk([], usage)


class _CompletionChunks(_ChunkWriter):
    def __init__(self, cid: str, model: str, include_usage: bool, prompt_tokens: int, n: int,
                 echoes: list[str]) -> None:
        super().__init__(cid, model, include_usage, prompt_tokens)
        self.n, self.echoes = n, echoes

    def chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> dict:
        c = Completion(id=self.cid, created=self.created, model=self.model, choices=choices, usage=usage)
        return c.model_dump(exclude={"usage"} if usage is None else set())

    def delta(self, source: int, d: Delta) -> list[dict]:
        index = source * self.n + d.index
        text = d.text
        if index not in self.opened:
            self.opened.add(index)
            text = self.echoes[source] + text
        if not text and not d.finish_reason:
            return []
        return [self.chunk([CompletionChoice(index=index, text=text, finish_reason=d.finish_reason)])]

    def usage_chunk(self, usage: Usage) -> dict:
        return self.chunk([], usage)


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


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _stream_response(request: Request, ctx: ServerContext, streams: list[AsyncIterator[Delta]], dl: Deadline,
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
            yield _sse({"error": exc.body().model_dump(exclude_none=True), "request_id": rid})
        finally:
            await merged.aclose()
            ctx.metrics.count_tokens(model, prompt_tokens, tokens)
        yield _sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
