"""Faults with real processes: SIGKILL the vLLM engine process, and then the whole Serve replica, while
requests are in flight, on a real Ray Serve app (tiny model) deployed beside the main one.

What must hold: no request hangs (every client call has a timeout, and every in-flight request gets an answer
well inside it); a request cut off by a dead engine is a JSON 503 with `Retry-After`; `/healthz` says
"unavailable" while the engine is dead; Serve's health check replaces the replica; requests after recovery
succeed on a new replica process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from serve_fixtures import serve_app

pytestmark = pytest.mark.slow

APP = "faults"
CLIENT_TIMEOUT_S = 90  # a request still open after this counts as hung


@pytest.fixture(scope="module")
def faults_app(serve_cluster: int, tiny_model: Path):
    """The tiny app with the vLLM engine core in its own process (so it can be killed apart from the replica)
    and a fast health check (so the replacement starts within seconds). Auth is on, as in the main app."""
    from serving.recipe import ServeRecipe, load_serve_recipe

    base = load_serve_recipe("serve-tiny", [f"engine.model={tiny_model}", "served_model_name=tiny"])
    data = base.model_dump(mode="json")
    data["name"] = APP
    dep = data["deployment"]
    dep.update(health_check_period_s=1, health_check_timeout_s=20, graceful_shutdown_timeout_s=1)
    dep["env_vars"] = {**dep["env_vars"], "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    recipe = ServeRecipe.model_validate(data)
    with serve_app(recipe, APP, f"/{APP}", serve_cluster) as url:
        yield url


@pytest.fixture(scope="module")
def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def replica_pid() -> int:
    """The engine replica's PID, from the GCS actor table (the private cluster runs without a dashboard, so
    `ray.util.state` has no server to ask)."""
    import ray

    alive = [a for a in ray._private.state.actors().values()
             if a["ActorClassName"] == f"ServeReplica:{APP}:XalignServer" and a["State"] == "ALIVE"]
    assert len(alive) == 1, f"expected one live replica of {APP}, found {alive}"
    return int(alive[0]["Pid"])


def engine_core_pid(replica: int) -> int:
    import psutil

    children = psutil.Process(replica).children(recursive=True)
    cores = [c.pid for c in children if "EngineCore" in c.name() or "EngineCore" in " ".join(c.cmdline())]
    assert cores, f"no vLLM EngineCore process under replica {replica}: {[(c.pid, c.name()) for c in children]}"
    return cores[0]


def wait_ready(url: str, timeout: float = 300) -> list[int]:
    """Poll /healthz until 200; returns every status seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/healthz", timeout=10).status_code
        except httpx.HTTPError:
            status = -1  # connection-level failure while Serve reroutes
        seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready again within {timeout:.0f} s (statuses seen: {sorted(set(seen))})")


async def _in_flight_then(url: str, headers: dict[str, str], kill, n: int = 12) -> list[httpx.Response]:
    """Start `n` long generations, wait until the engine holds some, call `kill`, and collect every answer."""
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 128, "temperature": 1.0, "seed": 1}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
        tasks = [asyncio.create_task(client.post("/v1/completions", json={**body, "seed": i})) for i in range(n)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            depth = (await client.get("/healthz")).json().get("queue_depth", 0)
            if depth > 0 or all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        kill()
        return await asyncio.gather(*tasks)  # an exception here (ReadTimeout) is a hang: the test fails


def test_engine_process_killed_in_flight_is_503_with_retry_after(faults_app: str, headers: dict[str, str]):
    url = faults_app
    wait_ready(url)
    replica = replica_pid()
    core = engine_core_pid(replica)
    healthz_after_kill: list[int] = []

    def kill() -> None:
        os.kill(core, signal.SIGKILL)
        time.sleep(0.5)
        healthz_after_kill.append(httpx.get(f"{url}/healthz", timeout=30).status_code)

    responses = asyncio.run(_in_flight_then(url, headers, kill))
    cut = [r for r in responses if r.status_code != 200]
    print("in flight when the engine died:", sorted(r.status_code for r in responses))
    assert cut, "every request finished before the engine died: nothing was in flight"
    for r in cut:
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        err = r.json()["error"]
        assert err["code"] == "engine_dead" and err["type"] == "engine_error", err
        assert r.json()["request_id"]
    # The replica is still up but its engine is not: /healthz must not claim readiness.
    assert healthz_after_kill and healthz_after_kill[0] != 200

    seen = wait_ready(url)
    assert replica_pid() != replica, "Serve did not replace the replica whose engine died"
    r = httpx.post(f"{url}/v1/completions", headers=headers, timeout=CLIENT_TIMEOUT_S,
                   json={"model": "tiny", "prompt": "Hello", "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] is not None
    assert seen[-1] == 200


def test_replica_process_killed_in_flight_fails_fast_and_recovers(faults_app: str, headers: dict[str, str]):
    """The whole replica (engine included) dies: Ray Serve's proxy answers its in-flight requests itself (a 5xx,
    never a hang), queues new ones until the replacement is up, and those succeed."""
    url = faults_app
    wait_ready(url)
    replica = replica_pid()
    after: dict[str, httpx.Response] = {}

    def kill() -> None:
        os.kill(replica, signal.SIGKILL)

    responses = asyncio.run(_in_flight_then(url, headers, kill))
    cut = [r for r in responses if r.status_code != 200]
    print("in flight when the replica died:", sorted(r.status_code for r in responses), [r.text[:80] for r in cut[:1]])
    assert cut, "every request finished before the replica died: nothing was in flight"
    assert all(500 <= r.status_code < 600 for r in cut), [(r.status_code, r.text[:200]) for r in cut]

    # A request sent while no replica exists waits for the replacement rather than failing.
    after["first"] = httpx.post(f"{url}/v1/completions", headers=headers, timeout=300,
                                json={"model": "tiny", "prompt": "Hello", "max_tokens": 8})
    assert after["first"].status_code == 200, after["first"].text
    wait_ready(url)
    assert replica_pid() != replica
