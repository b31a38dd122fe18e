"""The one Ray bootstrap: attach when told where (`--address` / RAY_ADDRESS, as under `ray job submit`),
otherwise start an embedded private cluster with its own temp dir and auth token, and stop it after.

What Ray forwards from its workers goes to the log file of `cluster.logs.library_output_to` when the caller
(the `xalign` command line) has entered one, and to the console otherwise.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.locations import cache_dir
from cluster.logs import route_worker_output

# Passed to every worker so embedded and submitted runs resolve models, data and caches alike.
_PROPAGATED_ENV = (
    "XALIGN_CACHE", "XALIGN_DATA", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_CACHE_ROOT",
    "TORCH_EXTENSIONS_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "DS_ACCELERATOR",
    "VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS",
    # Never secrets such as XALIGN_API_KEY: Ray logs runtime_env env_vars in runtime_env_agent.log. Workers of an
    # embedded cluster inherit the driver's environment; on Kubernetes the chart injects the key from a Secret.
)


def worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _PROPAGATED_ENV if k in os.environ}
    # DeepSpeed JIT-builds ops on first use; one cache shared by all workers builds them once.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    env.setdefault("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


# Loggers of Ray internals that only repeat a harmless warning in an embedded cluster: Ray Train v2's placement
# group cleaner asks the state API (served by the dashboard, which embedded clusters do not start) every few
# seconds whether the controller lives, and warns each time it cannot ask. It still cleans up after the
# controller's actor dies, which is all it is for.
_QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_worker_logs() -> None:
    """Ray `worker_process_setup_hook` of embedded clusters (runs in every worker process, once connected)."""
    import ray

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray internals that look a cluster up by address (that same cleaner) otherwise fail with "Found multiple
    # active Ray instances" when another private cluster runs on the machine, and kill their thread.
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> Iterator[str]:
    """Yield the address of a connected Ray cluster; an embedded one is shut down on exit."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    runtime_env = {"env_vars": worker_env()}
    log_level = logging.WARNING if quiet else logging.INFO
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=log_level)
        route_worker_output()
        try:
            yield address
        finally:
            ray.shutdown()
        return
    temp_dir = tempfile.mkdtemp(prefix="xa-emb-", dir="/tmp")
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    # A private token per embedded cluster: never read or write the user's ~/.ray/auth_token.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    _refresh_auth_config()
    try:
        ctx = _start_embedded(temp_dir, num_cpus, runtime_env, log_level)
        route_worker_output()
        try:
            yield ctx.address_info["gcs_address"]
        finally:
            ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_auth_config()
        from cluster.local_cluster import cluster_pids, kill_pids

        kill_pids(cluster_pids(temp_dir), timeout=10)  # stragglers of *this* cluster only
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_embedded(temp_dir: str, num_cpus: int | None, runtime_env: dict, log_level: int, attempts: int = 3):
    """`ray.init` of a new local cluster, retried when its raylet misses Ray's fixed 30 s registration window
    ("The current node timed out during startup"), which happens on a saturated machine; each failed try's
    processes are stopped by PID before the next."""
    import time

    import ray

    from cluster.local_cluster import cluster_pids, kill_pids, worker_pool_config

    system_config = worker_pool_config(num_cpus)
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(
                address="local", _temp_dir=temp_dir, num_cpus=num_cpus, include_dashboard=False,
                _system_config=system_config,
                runtime_env={**runtime_env, "worker_process_setup_hook": "cluster.ray_session.quiet_worker_logs"},
                logging_level=log_level, configure_logging=True,
            )
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            logging.getLogger(__name__).warning("Ray's local node missed its startup window (attempt %d/%d, "
                                                "machine busy); starting it again", attempt, attempts)
            ray.shutdown()
            kill_pids(cluster_pids(temp_dir), timeout=10)
            time.sleep(5)
    raise AssertionError("unreachable")


def _refresh_auth_config() -> None:
    """Ray caches its auth mode and token per process; re-read them after changing the environment."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
