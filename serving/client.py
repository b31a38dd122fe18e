"""A small HTTP client for the translation API (used by `xalign translate`; handy in notebooks and scripts)."""

from __future__ import annotations

import os
from typing import Any

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


class APIRequestError(RuntimeError):
    """The server answered with an error; the message names the field at fault and the request id."""

    def __init__(self, status: int, payload: dict[str, Any] | None, text: str) -> None:
        err = (payload or {}).get("error") or {}
        rid = (payload or {}).get("request_id")
        msg = err.get("message") or text[:300] or f"HTTP {status}"
        super().__init__(f"HTTP {status}: {msg}" + (f" (request id {rid})" if rid else ""))
        self.status, self.error, self.request_id = status, err, rid


# A replica or engine that died or is being replaced (503 with Retry-After from the app; a plain 500/502 from
# Ray Serve's proxy when the whole replica died mid-request): worth another try once Serve has replaced it.
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, APIRequestError):
        return exc.status in RETRYABLE_STATUS
    return isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError))


class TranslateClient:
    def __init__(self, endpoint: str | None = None, api_key: str | None = None, timeout: float = 180.0) -> None:
        self.endpoint = (endpoint or os.environ.get("XALIGN_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout)

    def __enter__(self) -> TranslateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=1, max=10), reraise=True)
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        try:
            payload = r.json()
        except ValueError:
            payload = None
        if r.status_code >= 400:
            raise APIRequestError(r.status_code, payload, r.text)
        return payload or {}

    def translate(self, texts: list[str], target: str, source: str | None = None, model: str | None = None,
                  **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"target_lang": target, **extra}
        body.update({"text": texts[0]} if len(texts) == 1 else {"texts": texts})
        if source:
            body["source_lang"] = source
        if model:
            body["model"] = model
        return self._post("/v1/translate", body)

    def follow_up(self, instruction: str, session_id: str | None = None, history: list[dict] | None = None,
                  target: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"instruction": instruction}
        if session_id:
            body["session_id"] = session_id
        if history is not None:
            body["history"] = history
        if target:
            body["target_lang"] = target
        return self._post("/v1/translate", body)
