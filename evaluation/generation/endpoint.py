"""Generation against a running endpoint: `xalign serve` or any OpenAI-compatible server.

Two APIs: `chat` posts the canonical translation messages from `cluster.prompts` to
`/v1/chat/completions` (the server renders them with xalign's chat template, which reproduces
`cluster.prompts.render_text`); `translate` posts `{text, source_lang, target_lang}` to xalign's
`/v1/translate` and lets the server build the same prompt (its off-target guard is off unless
`endpoint.guard` says otherwise, so the score is the model's, not the guard's retries). Every request names
`generation.repetition_penalty` (1.0 by default), so a server default such as xalign serve's does not change
what is measured. Requests run `concurrency` at a time with retries (tenacity) on connection errors, 429 and 5xx.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from cluster import languages, prompts
from evaluation.generation.requests import clean, messages, stop_strings
from evaluation.recipe import EndpointSettings, GenerationSettings


class EndpointError(RuntimeError):
    pass


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


class EndpointClient:
    def __init__(self, settings: EndpointSettings, generation: GenerationSettings) -> None:
        if not settings.url:
            raise EndpointError("endpoint.url is not set (--endpoint URL)")
        self.settings, self.generation = settings, generation
        self.base = settings.url.rstrip("/").removesuffix("/v1")
        key = os.environ.get(settings.api_key_env)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def served_models(self) -> list[dict[str, Any]]:
        try:
            r = httpx.get(f"{self.base}/v1/models", headers=self.headers, timeout=30)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.base}/v1/models: {exc}") from None
        return r.json().get("data", [])

    def identity(self) -> dict[str, Any]:
        """What the endpoint says it serves; `root` is the model folder on vLLM-based servers."""
        models = self.served_models()
        chosen = self.settings.model or (models[0]["id"] if models else None)
        if chosen is None:
            raise EndpointError(f"{self.base}/v1/models lists no model; set endpoint.model")
        info = next((m for m in models if m.get("id") == chosen), {"id": chosen})
        self.model = chosen
        return {"endpoint": self.base, "api": self.settings.api, "served_model": chosen, "root": info.get("root")}

    def _request(self, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        g = self.generation
        if row.get("style") == "few_shot":  # plain text: the completions API, no chat template
            if self.settings.api != "chat":
                raise EndpointError("generation.prompt=few_shot needs endpoint.api=chat (OpenAI /v1/completions)")
            body = {"model": self.model, "prompt": row["few_shot"], "max_tokens": g.max_tokens,
                    "temperature": g.temperature, "repetition_penalty": g.repetition_penalty,
                    "stop": stop_strings("few_shot")}
            return "/v1/completions", body
        if self.settings.api == "chat":
            body = {"model": self.model, "messages": messages(row, g.template), "max_tokens": g.max_tokens,
                    "temperature": g.temperature, "repetition_penalty": g.repetition_penalty, "stop": [prompts.END]}
            return "/v1/chat/completions", body
        body = {"text": row["source"], "source_lang": languages.get(row["src"]).code,
                "target_lang": languages.get(row["tgt"]).code, "max_tokens": g.max_tokens,
                "temperature": g.temperature, "repetition_penalty": g.repetition_penalty, "guard": self.settings.guard,
                "model": self.settings.model}
        return "/v1/translate", {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def _text(path: str, payload: dict[str, Any]) -> tuple[str, str | None]:
        if path == "/v1/chat/completions":
            choice = payload["choices"][0]
            return choice["message"]["content"] or "", choice.get("finish_reason")
        if path == "/v1/completions":
            choice = payload["choices"][0]
            return choice.get("text") or "", choice.get("finish_reason")
        items = payload.get("items") or []
        if not items or not isinstance(items[0].get("translation"), str):
            raise EndpointError(f"/v1/translate answered without a translation: {str(payload)[:200]}")
        return items[0]["translation"], items[0].get("finish_reason")

    def check(self, rows: list[dict[str, Any]]) -> None:
        """Refuse a prompt style the API cannot carry before any request is sent."""
        if rows:
            self._request(rows[0])

    async def _one(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, row: dict[str, Any]) -> dict[str, Any]:
        path, body = self._request(row)
        async with sem:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.retries + 1), wait=wait_exponential(0.5, max=10),
                retry=retry_if_exception(_retryable), reraise=True,
            ):
                with attempt:
                    r = await client.post(path, json=body)
                    r.raise_for_status()
        raw, finish = self._text(path, r.json())
        return {**row, "raw": raw, "hypothesis": clean(raw), "finish_reason": finish}

    async def _all(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(self.settings.concurrency)
        limits = httpx.Limits(max_connections=self.settings.concurrency)
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, timeout=self.settings.timeout_s,
                                     limits=limits) as client:
            tasks = [asyncio.create_task(self._one(client, sem, r)) for r in rows]
            out = []
            try:
                for t in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="endpoint", unit="seg"):
                    out.append(await t)
            except httpx.HTTPError as exc:
                for t in tasks:
                    t.cancel()
                detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else ""
                raise EndpointError(f"{self.base}: {exc} {detail}".strip()) from None
        return sorted(out, key=lambda r: r["idx"])

    def generate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not hasattr(self, "model"):
            self.identity()
        self.check(rows)
        return asyncio.run(self._all(rows))
