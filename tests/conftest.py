"""Shared fixtures: tiny models built locally, private Ray clusters stopped by PID, offline caches.

Caches live in the checkout's ignored `.cache/` (reused between runs: the default-model conversion
takes a minute); everything else a test writes goes under pytest's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "test"

os.environ.setdefault("XALIGN_CACHE", str(CACHE))
for var, sub in (("HF_HOME", "hf"), ("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                 ("TRITON_CACHE_DIR", "triton"), ("TORCH_EXTENSIONS_DIR", "torch_extensions")):
    os.environ.setdefault(var, str(CACHE / sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a locally trained byte-level BPE tokenizer and xalign's chat template."""
    from cluster.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


class AgentNotReady(RuntimeError):
    pass


@pytest.fixture(scope="session")
def submit_job():
    """`ray job submit` as a subprocess from the checkout, retried while a freshly started head's job agent is not
    up yet ("No available agent", HTTP 500)."""
    import subprocess

    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

    @retry(retry=retry_if_exception_type(AgentNotReady), wait=wait_fixed(10), stop=stop_after_attempt(30),
           reraise=True)
    def submit(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        job = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
        if job.returncode != 0 and "No available agent to submit job" in job.stderr:
            raise AgentNotReady(job.stderr[-500:])
        return job

    return submit


@pytest.fixture(scope="session")
def private_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A private Ray head (own temp dir, ports, token) for job-submission tests, stopped by PID."""
    from cluster import local_cluster

    state_dir = tmp_path_factory.mktemp("ray-cluster")
    st = local_cluster.up(state_dir, num_cpus=2)
    try:
        yield st
    finally:
        local_cluster.down(state_dir)
        assert local_cluster.cluster_pids(st.temp_dir) == []


@pytest.fixture
def embedded_ray():
    """An embedded private Ray cluster for the duration of one test."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


class S3:
    """A real S3 HTTP API (moto's standalone server) on 127.0.0.1, reached through the standard AWS environment."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"


def _s3_environment() -> None:
    """The AWS environment of the test S3 server, set before any Ray cluster starts: Ray's worker processes
    inherit the environment of the process that started the cluster, and tests on the embedded clusters write
    shards from those workers. The server itself starts only when a test asks for it."""
    from cluster.local_cluster import free_port

    os.environ.setdefault("XALIGN_TEST_S3_PORT", str(free_port()))
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ['XALIGN_TEST_S3_PORT']}",
                       "AWS_ACCESS_KEY_ID": "xalign-test", "AWS_SECRET_ACCESS_KEY": "xalign-test-secret",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)


_s3_environment()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server as a subprocess on the port the environment names, stopped by PID."""
    import subprocess

    import httpx
    from tenacity import retry, stop_after_delay, wait_fixed

    from cluster.local_cluster import kill_pids

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                 endpoint.rsplit(":", 1)[1]], stdout=fh, stderr=subprocess.STDOUT)
    try:
        retry(wait=wait_fixed(0.3), stop=stop_after_delay(60), reraise=True)(httpx.get)(endpoint, timeout=2)
        assert proc.poll() is None, f"the S3 server exited: {log.read_text()[-2000:]}"
        yield S3(endpoint)
    finally:
        kill_pids([proc.pid])
        proc.wait(timeout=30)


@pytest.fixture
def s3(s3_server: S3, request: pytest.FixtureRequest) -> tuple[S3, str]:
    """The S3 server and a fresh bucket named after the test: (server, "s3://bucket")."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") or "xalign"
    return s3_server, s3_server.bucket(name)


# The suite's exit status is pytest's verdict. On a fresh machine a green run once died after pytest had
# finished, in the interpreter's own finalization: Ray's log sink failed writing the driver's
# python-core-driver-*.log ("Bad file descriptor"), then "pure virtual method called" and a segfault.
# Why (not reproduced in 20+ local runs; this is what the evidence points to): the first ray.init of a
# process starts native threads that ray.shutdown() never stops (gRPC's event engine, executors and timers,
# the GCS client's io service, OpenCensus' harvester: about ten stay after every embedded session is shut
# down, and its spdlog file logger stays open), and Ray offers no call that joins them. C++ static
# destructors run at a normal exit while those threads still run and log; a virtual call on a logger or
# sink mid-destruction is "pure virtual method called". Ray's own worker
# processes never exit that way (CoreWorkerShutdownExecutor::QuickExit ends them with _exit). Removing the
# session's temp dir is not the cause: an unlinked log file stays writable through its descriptor.
# So a process that loaded Ray's native core ends the same way once pytest has reported and run its own
# cleanup, keeping the verdict; other runs (no Ray) exit normally, as does any run with XALIGN_TEST_NORMAL_EXIT
# set. Any Ray session a test left open is shut down first, while Python is whole, since _exit skips Ray's
# atexit shutdown.
_EXIT_STATUS: list[int] = []


# Hypothesis (and schemathesis on it) caches under ./.hypothesis even without an example database: give it a
# directory of the run's own, removed at the end, so a test run leaves nothing in the checkout.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="xa-hypothesis-")


# vLLM's engine processes talk over ZeroMQ sockets it creates in VLLM_RPC_BASE_PATH (default: the system temp dir)
# and never unlinks: a full run used to leave ~60 of them in /tmp. The run gets its own folder (short: a socket
# path must fit in ~107 bytes), inherited by every Ray cluster and engine the tests start, removed at the end.
_VLLM_RPC_DIR = tempfile.mkdtemp(prefix="xa-vllm-", dir="/tmp")
os.environ.setdefault("VLLM_RPC_BASE_PATH", _VLLM_RPC_DIR)


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)
    shutil.rmtree(_VLLM_RPC_DIR, ignore_errors=True)
    _EXIT_STATUS.append(int(exitstatus))
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _EXIT_STATUS or os.environ.get("XALIGN_TEST_NORMAL_EXIT") or "ray._raylet" not in sys.modules:
        return
    stack = getattr(config, "_cleanup_stack", None)  # pytest's own cleanups (tmp_path retention, capture)
    if stack is not None:
        stack.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
