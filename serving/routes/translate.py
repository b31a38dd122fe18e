"""Translation routes: /v1/translate (single, batch, follow-ups), /v1/sessions/{id}, /v1/languages."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cluster import languages
from serving import errors
from serving.context import deadline, request_id, server
from serving.translate_schemas import SessionView, TextMessage, TranslateRequest, TranslateResponse

router = APIRouter(prefix="/v1", tags=["translation"], responses=errors.RESPONSES)

_ERRORS = {code: {"model": errors.ErrorResponse} for code in (401, 404, 413, 422, 500, 503, 504)}


@router.post("/translate", response_model=TranslateResponse, responses=_ERRORS)  # type: ignore[arg-type]
async def translate(req: TranslateRequest, request: Request) -> TranslateResponse:
    ctx = server(request)
    return await ctx.translator.translate(req, request_id(request), deadline(request))


@router.get("/sessions/{session_id}", response_model=SessionView, responses=_ERRORS)  # type: ignore[arg-type]
async def get_session(session_id: str, request: Request) -> SessionView:
    s = await server(request).sessions.call("get", session_id)
    return SessionView(session_id=s["session_id"], model=s["model"], source_lang=s["source_lang"],
                       target_lang=s["target_lang"], messages=[TextMessage(**m) for m in s["messages"]],
                       turns=s["turns"], expires_in_s=s["expires_in_s"])


@router.delete("/sessions/{session_id}", responses=_ERRORS)  # type: ignore[arg-type]
async def delete_session(session_id: str, request: Request) -> dict[str, bool]:
    return {"deleted": bool(await server(request).sessions.call("delete", session_id))}


@router.get("/languages")
async def list_languages() -> dict[str, list[dict[str, str | None]]]:
    """The language table: every code the API accepts for source_lang/target_lang."""
    return {"data": [{"code": lang.code, "flores": lang.flores, "iso1": lang.iso1, "iso3": lang.iso3,
                      "name": lang.name, "native": lang.native, "resource": lang.resource}
                     for lang in languages.all_languages()]}
