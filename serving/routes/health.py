"""Operations and the playground: /healthz, /metrics, and the static page at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from serving.context import server

router = APIRouter(tags=["operations"])

STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """200 only when the engine can serve; 503 (with the reason) otherwise."""
    ctx = server(request)
    gen = ctx.generator
    body = {"model": gen.base_name, "adapters": list(gen.adapters), "replica": ctx.metrics.replica,
            "queue_depth": gen.unfinished()}
    try:
        await gen.check_health()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc) or type(exc).__name__, **body},
                            status_code=503)
    return JSONResponse({"status": "ok", **body})


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus text format, documented as such
async def metrics(request: Request) -> Response:
    data, content_type = server(request).metrics.render()
    return Response(data, media_type=content_type)


@router.get("/", include_in_schema=False)
async def playground() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
