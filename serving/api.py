"""The FastAPI application of one replica: routes, the request gate, CORS (off unless configured) and one
JSON error shape for everything that can go wrong.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from vllm.exceptions import VLLMClientError

from serving import errors
from serving.context import ServerContext, request_id
from serving.middleware import Gate
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

    # Outermost last: CORS answers preflights before the gate asks for a key.
    app.add_middleware(Gate, api_key=ctx.api_key, max_body_bytes=ctx.recipe.limits.max_body_bytes,
                       metrics=ctx.metrics)
    if ctx.recipe.http.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=ctx.recipe.http.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=[errors.REQUEST_ID_HEADER])
    return app
