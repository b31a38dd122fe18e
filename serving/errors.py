"""Every error the API returns: one JSON shape (OpenAI's `{"error": {...}}` plus the request id), a 4xx
naming the request field at fault, or a 5xx carrying the request id to look up in the replica's log.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

REQUEST_ID_HEADER = "x-request-id"
ENGINE_RESTART_RETRY_AFTER_S = 10  # health check period plus a tiny engine's start; clients back off, then retry


class ErrorBody(BaseModel):
    message: str
    type: str  # invalid_request_error | authentication_error | not_found_error | timeout_error | engine_error ...
    param: str | None = None  # the request field at fault, e.g. "texts[3]" or "target_lang"
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str
    errors: list[ErrorBody] | None = None  # every problem, when a request has several


# Every error status the /v1/ routes can answer, documented in the OpenAPI schema with the one error shape.
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 500, 503, 504)}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after_s = retry_after_s  # sent as Retry-After: the failure is temporary

    def body(self) -> ErrorBody:
        return ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)


def invalid(param: str | None, message: str, status: int = 422) -> APIError:
    return APIError(status, message, type="invalid_request_error", param=param)


def from_vllm(exc: Exception, status: int = 422, fields: Collection[str] = ()) -> APIError:
    """vLLM's request errors (`VLLMValidationError`: its protocol models' checks, SamplingParams') -> a 4xx.
    The field is vLLM's `parameter`, else the message's first word when it is one of `fields` ("n must be 1
    when using greedy sampling"); the message is the first argument, without vLLM's "(parameter=...)" tail."""
    message = str(exc.args[0]) if exc.args else type(exc).__name__
    param = getattr(exc, "parameter", None)
    if param is None and message.split(" ", 1)[0] in fields:
        param = message.split(" ", 1)[0]
    return invalid(param, f"{param}: {message}" if param else message, status=status)


def not_found(param: str, message: str) -> APIError:
    return APIError(404, message, type="not_found_error", param=param, code="not_found")


def timeout(seconds: float) -> APIError:
    return APIError(504, f"the request did not finish within {seconds:g} s and was aborted", type="timeout_error",
                    code="request_timeout")


def engine_failure(detail: str, dead: bool) -> APIError:
    status = 503 if dead else 500
    hint = "the engine died; the replica restarts" if dead else "generation failed"
    # A dead engine fails the replica's health check and Serve starts a new one: worth retrying shortly.
    return APIError(status, f"{hint}: {detail}", type="engine_error", code="engine_dead" if dead else "engine_error",
                    retry_after_s=ENGINE_RESTART_RETRY_AFTER_S if dead else None)


def error_response(request_id: str, err: APIError, others: Sequence[ErrorBody] | None = None) -> JSONResponse:
    payload = ErrorResponse(error=err.body(), request_id=request_id, errors=list(others) if others else None)
    # The X-Request-ID response header comes from Ray Serve's proxy (or serving.middleware.Gate without one).
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
    return JSONResponse(payload.model_dump(exclude_none=True), status_code=err.status, headers=headers)


_UNION_TAG = re.compile(r"^(str|int|float|bool|bytes)$|[\[\]-]")


def field_path(loc: Sequence[Any]) -> str | None:
    """Pydantic's ("body", "texts", 3) -> "texts[3]"; "body" alone means the whole request."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _UNION_TAG.search(p):
            continue  # union-member tags pydantic inserts into locations: "str", "list[int]", "function-after[...]"
        else:
            out += f".{p}" if out else str(p)
    return out or None


_LEADING_FIELD = re.compile(r"^(?:Value error, )?([A-Za-z_][\w.\[\]]*): (.*)$", re.S)


def from_validation(errors: Sequence[dict[str, Any]]) -> tuple[APIError, list[ErrorBody]]:
    """FastAPI/pydantic validation errors -> the first as the error, all of them listed."""
    bodies: list[ErrorBody] = []
    for e in errors:
        loc = tuple(e.get("loc", ()))
        # A body that is not JSON at all: pydantic's location is a character offset, not a field.
        param = "body" if e.get("type") == "json_invalid" else field_path(loc)
        msg = str(e.get("msg", "invalid value"))
        if e.get("type") == "json_invalid" and len(loc) > 1:
            msg = f"{msg} at character {loc[1]}"
        m = _LEADING_FIELD.match(msg) if e.get("type") == "value_error" else None
        if m:
            # Cross-field checks name their field in the message ("text: send either ..."), relative to the
            # object they check.
            param, msg = (f"{param}.{m.group(1)}" if param else m.group(1)), m.group(2)
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if param is None and loc[:1] == ("body",):
            param = "body"  # the body as a whole: missing, null, a list or a string instead of an object
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif e.get("type") == "missing":
            msg = "field required"
        bodies.append(ErrorBody(message=f"{param}: {msg}" if param else msg, type="invalid_request_error",
                                param=param, code=e.get("type")))
    first = bodies[0] if bodies else ErrorBody(message="invalid request", type="invalid_request_error")
    return APIError(422, first.message, type=first.type, param=first.param, code=first.code), bodies
