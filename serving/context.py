"""What every route of one replica shares (engine, translator, sessions, metrics), reached from a request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Request

from serving.generation import Deadline, Generator
from serving.metrics import Metrics
from serving.recipe import ServeRecipe
from serving.session_client import SessionClient
from serving.translation import Translator


@dataclass
class ServerContext:
    recipe: ServeRecipe
    generator: Generator
    translator: Translator
    sessions: SessionClient
    metrics: Metrics
    api_key: str | None


def server(request: Request) -> ServerContext:
    return request.app.state.ctx


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or new_request_id()


def engine_request_id(request: Request, suffix: str = "") -> str:
    """Unique per engine call even when a client reuses its X-Request-ID."""
    return f"{request_id(request)}-{uuid.uuid4().hex[:8]}{suffix}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def deadline(request: Request) -> Deadline:
    return Deadline(server(request).recipe.limits.request_timeout_s)
