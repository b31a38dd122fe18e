"""A bounded load run (the code of benchmarks/serve_load.py, 200 requests instead of 2,000) against the main app
(tiny model + `parrot` LoRA, API key on): mixed chat / translate / batch translate on both models at
concurrency 32, with unauthenticated requests mixed in. Outcomes only, no timing thresholds: every request
answered (no transport error, no hang), 0 5xx, every authenticated request 200 and every other one 401,
bounded replica memory growth, the same replica throughout, and the API key nowhere in the run's logs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# The engine replica's RSS (process + children) settles over the first ~1,000 requests (allocator arenas, vLLM's
# per-request buffers; benchmarks/serve_load.py measured +231, +98, +9, +28 MiB per 500 requests on the tiny
# model), so 200 requests cannot separate settling from a slow leak: that is the benchmark's job. What this run
# bounds is a gross leak, ~1 MiB retained per request (e.g. every prompt's logits or KV blocks kept alive).
RSS_GROWTH_BOUND_MB = 200


def _load_module():
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "benchmarks" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load_run(main_app: str, api_key: str):
    bench = _load_module()
    calls = bench.request_mix(200, ["tiny", "parrot"], max_tokens=8, seed=0, unauthorized_every=20)
    warmup = bench.request_mix(64, ["tiny", "parrot"], max_tokens=8, seed=1)
    result = bench.measured_load(main_app, api_key, "xalign", calls, 32, warmup, rounds=2, progress=False)
    print(bench.markdown(result, "tiny"))
    return calls, result


def test_load_answers_everything_without_5xx(load_run):
    calls, result = load_run
    assert result.client_errors == [], result.client_errors[:5]  # a timeout here would be a hung request
    assert result.server_errors == [], result.server_errors[:5]
    expected: dict[str, int] = {}
    for c in calls:
        key = f"{c.kind}:{200 if c.auth else 401}"
        expected[key] = expected.get(key, 0) + 1
    assert result.statuses == expected
    assert {"chat", "translate", "translate_batch"} <= set(result.latencies_ms)


def test_load_memory_bounded_and_replica_kept(load_run):
    _, result = load_run
    rss = result.rss_mb
    assert rss["replica_restarted"] == 0.0, "the engine replica changed during the run"
    assert rss["rss_before_mb"] > 0
    assert rss["rss_growth_mb"] <= RSS_GROWTH_BOUND_MB, (rss, result.rss_samples_mb)


def test_api_key_never_in_the_run_logs(load_run, api_key: str):
    """Every file Ray and Serve wrote for this session (driver, workers, proxy, controller, replicas, access
    logs after 200+ authenticated and 10 wrongly authenticated requests) is free of the key."""
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    files = [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert any("ServeReplica" in p.name or "replica" in p.name.lower() for p in files), "no replica logs found"
    needle = api_key.encode()
    leaked = [str(p.relative_to(session)) for p in files if needle in p.read_bytes()]
    assert leaked == []
