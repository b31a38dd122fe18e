"""Serving fixtures: one private embedded Ray cluster with Serve for the whole session, and the main xalign
application (tiny model + `parrot` LoRA, API key on) shared by the API, client and playground modules.
Modules that need another configuration deploy their own application beside it (see test_serve_faults).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from serve_fixtures import train_parrot

API_KEY = secrets.token_hex(16)
SERVE_PATIENCE = ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S")


@pytest.fixture(scope="session")
def parrot_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_parrot(tiny_model, tmp_path_factory.mktemp("parrot-adapter"))


@pytest.fixture(scope="session")
def serve_cluster():
    """A private embedded Ray cluster running Serve on a free port; shut down (and its processes reaped by PID)."""
    import ray
    from ray import serve

    from cluster.local_cluster import free_port
    from cluster.ray_session import ray_session

    # ray_session would reuse a cluster this process already holds, whose workers lack the key set below.
    assert not ray.is_initialized(), "a Ray session of an earlier test is still open in this process"

    saved = os.environ.get("XALIGN_API_KEY")
    os.environ["XALIGN_API_KEY"] = API_KEY  # reaches the replicas through the session's worker environment
    # Serve's controller kills a proxy that misses a 5 s readiness check; a saturated CI machine can miss it.
    for var in SERVE_PATIENCE:
        os.environ.setdefault(var, "60")
    port = free_port()
    try:
        with ray_session(num_cpus=2):  # retries a raylet that misses its startup window
            serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 300})
            try:
                yield port
            finally:
                serve.shutdown()
    finally:
        if saved is None:
            os.environ.pop("XALIGN_API_KEY", None)
        else:
            os.environ["XALIGN_API_KEY"] = saved


@pytest.fixture(scope="session")
def main_recipe(tiny_model: Path, parrot_adapter: Path):
    from serving.recipe import load_serve_recipe

    return load_serve_recipe("serve-tiny", [f"engine.model={tiny_model}", "served_model_name=tiny",
                                            f"adapters.parrot={parrot_adapter}"])


@pytest.fixture(scope="session")
def main_app(serve_cluster: int, main_recipe) -> str:
    """Base URL of the main application (route prefix /), deployed with the public `serving.app.deploy`."""
    from serving import app

    url = app.deploy(main_recipe, port=serve_cluster)
    try:
        yield url
    finally:
        app.shutdown(main_recipe.name)


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY
