"""The gate every HTTP request passes: request id, API key, body size, and per-route metrics.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware), so streaming responses pass through
untouched. The API key is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import errors
from serving.context import new_request_id
from serving.metrics import Metrics
from serving.recipe import AuthSettings

log = logging.getLogger("ray.serve.xalign")  # Serve writes it to the replica log

PROTECTED_PREFIX = "/v1/"  # the API; /healthz, /metrics and the playground page stay open for probes
# A client's own X-Request-ID is adopted (to correlate its logs with ours) only in this shape: it goes into
# logs, engine request ids and error bodies, so free text (spaces, quotes, escapes, kilobytes) is refused.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


REQUEST_ID_HEADER_PARAM = "x-request-id"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a chunked body passes the limit; an HTTPException so FastAPI keeps its 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body: the request body exceeds {limit} bytes (limits.max_body_bytes)")


def load_api_key(auth: AuthSettings) -> str | None:
    """The key from the environment variable the recipe names; None means auth is off."""
    key = os.environ.get(auth.api_key_env, "").strip() if auth.api_key_env else ""
    if not key and auth.required:
        raise RuntimeError(f"auth.required is set but the environment variable {auth.api_key_env} is empty")
    log.info("API key auth: %s", f"on (key from ${auth.api_key_env})" if key else "off")
    return key or None


def presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


def key_matches(presented: str | None, key: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), key.encode())


class Gate:
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # Ray Serve's proxy sets x-request-id (the client's, or a fresh one) and returns it in the response.
        presented = headers.get(errors.REQUEST_ID_HEADER)
        bad_id = presented is not None and not REQUEST_ID.fullmatch(presented)
        echo_id = presented is None
        rid = new_request_id() if presented is None or bad_id else presented
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500}
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if echo_id:
                    MutableHeaders(scope=message).append(errors.REQUEST_ID_HEADER, rid)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self._refuse(scope, headers, bad_id)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
                return
            await self.app(scope, self._counting(receive), send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(_route(scope), status["code"], time.perf_counter() - started)

    def _refuse(self, scope: Scope, headers: Headers, bad_id: bool) -> Any:
        path = _relative_path(scope)
        if bad_id:
            err = errors.invalid(REQUEST_ID_HEADER_PARAM, f"{REQUEST_ID_HEADER_PARAM}: 1-128 characters of letters, "
                                                          "digits and . _ : - (starting with a letter or digit)",
                                 status=400)
            return errors.error_response(scope["state"]["request_id"], err)
        protected = self.api_key and path.startswith(PROTECTED_PREFIX) and scope["method"] != "OPTIONS"
        if protected and not key_matches(presented_key(headers), self.api_key):
            err = errors.APIError(401, "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                                  type="authentication_error", param="authorization", code="invalid_api_key")
            return errors.error_response(scope["state"]["request_id"], err)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            err = errors.invalid("body", f"body: {length} bytes; the limit is {self.max_body} (limits.max_body_bytes)",
                                 status=413)
            return errors.error_response(scope["state"]["request_id"], err)
        return None

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return wrapped


def _relative_path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _route(scope: Scope) -> str:
    """The matched route's template (bounded label values), or "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
