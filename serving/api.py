"""The FastAPI application of one replica: routes, the request gate, CORS (off unless configured) and one
JSON error shape for everything that can go wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from vllm.exceptions import VLLMClientError

from serving import errors
from serving.context import ServerContext, request_id
from serving.middleware import Gate
from serving.openai_protocol import INT64
from serving.routes import health, openai, translate

log = logging.getLogger("ray.serve.xalign")  # Serve writes it to the replica log


def create_api(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="xalign", version="0.1.0",
        description="Multilingual LLM serving: OpenAI-compatible chat/completions and a translation API with "
                    "interactive refinement and an off-target guard.",
    )
    app.state.ctx = ctx
    app.include_router(openai.router)
    app.include_router(translate.router)
    app.include_router(health.router)
    app.mount("/static", StaticFiles(directory=health.STATIC), name="static")

    @app.exception_handler(errors.APIError)
    async def _api_error(request: Request, exc: errors.APIError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request %s failed: %s", request_id(request), exc.message)
        return errors.error_response(request_id(request), exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first, all_errors = errors.from_validation(exc.errors())
        return errors.error_response(request_id(request), first, all_errors if len(all_errors) > 1 else None)

    @app.exception_handler(VLLMClientError)
    async def _vllm_validation(request: Request, exc: VLLMClientError) -> JSONResponse:
        # vLLM's protocol models check some fields themselves while the body is parsed (serving.openai_protocol).
        return errors.error_response(request_id(request), errors.from_vllm(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "invalid_request_error"}
        param = "body" if exc.status_code in (400, 413) else None  # 400: Starlette could not parse the body
        err = errors.APIError(exc.status_code, str(exc.detail), type=kind.get(exc.status_code, "http_error"),
                              param=param)
        return errors.error_response(request_id(request), err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception("request %s failed", rid)
        err = errors.APIError(500, f"internal error ({type(exc).__name__}); quote request id {rid}",
                              type="server_error", code="internal_error")
        return errors.error_response(rid, err)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            if ctx.generator is not None:  # None only in tests of the HTTP layer without an engine
                schema = with_served_models(schema, ctx.generator.model_names())
            app.openapi_schema = exact_bounds(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Outermost last: CORS answers preflights before the gate asks for a key.
    app.add_middleware(Gate, api_key=ctx.api_key, max_body_bytes=ctx.recipe.limits.max_body_bytes,
                       metrics=ctx.metrics)
    if ctx.recipe.http.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=ctx.recipe.http.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=[errors.REQUEST_ID_HEADER])
    return app


def with_served_models(schema: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Publish the served model names as the enum of every request's `model`: the schema then says exactly
    which values the server takes (any other name is a 404), and a client or fuzzer reaches generation."""
    served = {"type": "string", "enum": list(names)}
    for component in schema.get("components", {}).get("schemas", {}).values():
        model = component.get("properties", {}).get("model")
        if model is None or component.get("title", "").endswith("Response"):
            continue
        if model.get("type") == "string":
            model.update(served)
        for branch in model.get("anyOf", []):
            if branch.get("type") == "string":
                branch.update(served)
    return schema


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def exact_bounds(node: Any) -> Any:
    """FastAPI's OpenAPI model holds numeric bounds as floats: 2**63 - 1 (a seed's maximum) would be published as
    9.223372036854776e18, i.e. 2**63, a value the server refuses. Integral bounds are written as integers again,
    and that one rounded value as the int64 maximum it came from."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = INT64[1] if value == float(INT64[1]) else int(value)
            else:
                exact_bounds(value)
    elif isinstance(node, list):
        for item in node:
            exact_bounds(item)
    return node
