"""The xalign Ray Serve application.

    xalign serve --model default --adapter de=runs/x/export/adapter
    serve run serving.app:build recipe=serve-tiny              # a recipe as it is
    xalign serve --recipe serve-tiny engine.model=X --print-config > serve.yaml && serve run serve.yaml

Two deployments: `XalignServer` (FastAPI ingress and a vLLM engine in the same replica, so a request
crosses one hop: proxy -> replica) and `SessionStore` (server-side conversations shared by all
replicas, no CPU reserved).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from serving.recipe import ServeRecipe, from_args
from serving.serve_config import ENGINE_DEPLOYMENT, PROXY_TIMEOUT_MARGIN_S, SESSIONS_DEPLOYMENT
from serving.sessions import SessionError, SessionStore

log = logging.getLogger("ray.serve.xalign")  # Serve writes it to the replica log



@serve.deployment(name=SESSIONS_DEPLOYMENT, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class SessionStoreDeployment:
    def __init__(self, ttl_s: float, max_sessions: int, max_turns: int) -> None:
        self.store = SessionStore(ttl_s, max_sessions, max_turns)

    def call(self, method: str, *args: Any) -> dict[str, Any]:
        """One entry point; refusals travel back as data rather than as remote exceptions."""
        if method not in ("create", "get", "append", "delete", "stats"):
            return {"error": f"unknown session operation {method!r}", "status": 400}
        try:
            return {"ok": getattr(self.store, method)(*args)}
        except SessionError as exc:
            return {"error": str(exc), "status": exc.status}


@serve.deployment(name=ENGINE_DEPLOYMENT)
@serve.ingress()
class XalignServer:
    async def __init__(self, recipe: dict[str, Any], sessions: DeploymentHandle) -> None:
        from serving.context import ServerContext
        from serving.generation import Generator
        from serving.metrics import Metrics
        from serving.middleware import load_api_key
        from serving.session_client import SessionClient
        from serving.translation import Translator

        self.recipe = ServeRecipe.model_validate(recipe)
        api_key = load_api_key(self.recipe.auth)  # before the engine: a missing required key fails fast
        self.generator = Generator(self.recipe)
        await self.generator.load_adapters()
        gen = self.generator
        metrics = Metrics(_replica_name(), gen.unfinished, lambda: not gen.dead)
        session_client = SessionClient(sessions)
        translator = Translator(gen, session_client, self.recipe.guard, self.recipe.limits, metrics)
        self.ctx = ServerContext(self.recipe, gen, translator, session_client, metrics, api_key)

    def __serve_build_asgi_app__(self) -> Any:
        from serving.api import create_api

        return create_api(self.ctx)

    async def check_health(self) -> None:
        """Serve restarts the replica when this raises (a dead engine never recovers in place)."""
        await self.generator.check_health()

    def __del__(self) -> None:
        gen = getattr(self, "generator", None)
        if gen is not None:
            try:
                gen.shutdown()
            except Exception:  # interpreter shutdown: the engine process goes with us anyway
                pass


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (never in production)
        return "local"


def build_app(recipe: ServeRecipe) -> Application:
    s = recipe.sessions
    sessions = SessionStoreDeployment.bind(s.ttl_s, s.max_sessions, s.max_turns)
    return XalignServer.options(**recipe.deployment.options()).bind(recipe.model_dump(mode="json"), sessions)


def build(args: dict[str, Any]) -> Application:
    """Application builder for serveConfigV2 / `serve run`: `args` is `serving.recipe.ServeArgs`, a recipe (name,
    path or inline mapping) and `key.sub=value` overrides."""
    return build_app(from_args(args))


# ---- Python API: run the app on an already connected Ray cluster (the demo, notebooks) ----------------

_DEPLOYED: dict[str, bool] = {}  # application name -> whether deploy() started Serve for it


def serve_port() -> int | None:
    """HTTP port of the Serve instance running on the connected cluster, or None when Serve is not running."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else int(client.http_config.port)


def deploy(recipe: ServeRecipe, *, port: int | None = None, host: str = "127.0.0.1",
           timeout_s: float = 900.0) -> str:
    """Deploy the xalign app on the Ray cluster this process is connected to and return its base URL once
    /healthz answers 200 (the engine is loaded). Returns immediately after that: the app keeps running in
    the cluster until `shutdown()`.

    Serve is started on `port` (default: the recipe's http.port; pass a free port when several users share a
    machine) unless it already runs on the cluster, in which case its port is used and `port` must agree.
    """
    import ray


    if not ray.is_initialized():
        raise RuntimeError("deploy() needs a connected Ray cluster: call it inside cluster.ray_session.ray_session() "
                           "or after ray.init(address=...)")
    running = serve_port()
    started = running is None
    if started:
        running = port or recipe.http.port
        serve.start(http_options={"host": host, "port": running,
                                  "request_timeout_s": recipe.limits.request_timeout_s + PROXY_TIMEOUT_MARGIN_S})
    elif port is not None and port != running:
        raise RuntimeError(f"Serve already runs on this cluster on port {running}; cannot deploy on port {port}")
    serve.run(build_app(recipe), name=recipe.name, route_prefix=recipe.http.route_prefix, blocking=False)
    _DEPLOYED[recipe.name] = started or _DEPLOYED.get(recipe.name, False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{running}{recipe.http.route_prefix.rstrip('/')}"
    wait_ready(url, recipe.name, timeout_s)
    return url


def wait_ready(url: str, app_name: str, timeout_s: float = 900.0) -> None:
    """Block until `url`/healthz answers 200; a failed deployment raises with Serve's message."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        state = str(app.status) if app else "missing"
        if state.endswith("DEPLOY_FAILED"):
            raise RuntimeError(f"application {app_name} failed to deploy: {app.message}")
        if state.endswith("RUNNING"):
            try:
                if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # the proxy may not route to the new app yet
        time.sleep(1)
    raise TimeoutError(f"application {app_name} was not ready at {url}/healthz within {timeout_s:.0f} s")


def shutdown(name: str | None = None) -> None:
    """Delete an application deployed by `deploy()` (default: all of them); Serve itself is shut down when
    `deploy()` started it and no application of ours is left."""
    names = [name] if name else list(_DEPLOYED)
    stop_serve = False
    for n in names:
        stop_serve |= _DEPLOYED.pop(n, False)
        serve.delete(n)
    if stop_serve and not _DEPLOYED and not serve.status().applications:
        serve.shutdown()
