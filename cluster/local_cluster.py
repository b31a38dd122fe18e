"""A private local Ray cluster for `ray job submit`: own temp dir, own ports, own auth token, stopped by PID.

`ray stop` would kill every Ray process on the machine, other users' clusters included, so xalign
never calls it: it records the cluster's state in a folder and stops exactly the processes whose
command line or environment names that cluster's temp dir.

`up(workers=N)` adds N worker nodes on the same machine, each its own raylet (like Ray's
`ray.cluster_utils.Cluster`), so multi-node behaviour (placement, losing a node) can be exercised on one
host. All raylets share the host's IP, so Ray's `node:<ip>` resource cannot tell them apart: every node
carries a custom resource instead (`xalign-head`, `xalign-worker` and `xalign-worker-<i>`), and
`resources={"xalign-worker-2": 0.01}` forces a task onto worker 2. `node_label` maps a `ray.nodes()`
entry's resources back to "head"/"worker-<i>".
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.locations import cache_dir


def worker_pool_config(num_cpus: int | None) -> dict[str, int]:
    """Ray system config for the clusters xalign starts (embedded and `xalign cluster up`).

    Ray keeps at most num_cpus idle workers and kills the rest after 1 s; the data pipeline's half-CPU
    stages run two workers per CPU, so every stage boundary killed and re-spawned workers (~2 CPU-s apiece
    for the interpreter and imports): a third of a 2-core machine's time between the pipeline's executions."""
    cpus = num_cpus or os.cpu_count() or 1
    return {"num_workers_soft_limit": 2 * cpus, "idle_worker_killing_time_threshold_ms": 10_000}


def free_port() -> int:
    """A free TCP port from the OS's ephemeral range (outside Ray's worker range 10002-19999)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_state_dir() -> Path:
    return cache_dir() / "cluster"


HEAD_RESOURCE = "xalign-head"
WORKER_RESOURCE = "xalign-worker"
# Ray's default object store is 30% of the machine's memory per node: N+1 nodes on one host would promise
# more shared memory than it has, so worker nodes get a fixed, modest store (Ray spills to disk beyond it).
WORKER_OBJECT_STORE_BYTES = 1 << 30
# With workers, a SIGKILLed raylet is declared dead after about period x threshold (Ray's defaults: 3 s x 5);
# a refused connection fails a check at once, while a merely slow raylet still gets Ray's 10 s per check.
MULTI_NODE_SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}
# Set in the environment of every process the cluster starts (and inherited by theirs): Ray renames its agents
# and workers (`ray::DashboardAgent`, `ray::IDLE`), and its client server's command line names no temp dir.
MARKER_ENV = "XALIGN_CLUSTER_TEMP_DIR"


@dataclass
class WorkerNode:
    """One worker raylet on this host. Every listening port is its own: raylets on one IP must not share
    any (Ray's defaults would give them the same dashboard agent port, 52365)."""

    index: int  # 1-based
    num_cpus: int
    node_manager_port: int
    object_manager_port: int
    agent_port: int
    agent_grpc_port: int
    metrics_export_port: int
    runtime_env_agent_port: int

    @property
    def label(self) -> str:
        return f"worker-{self.index}"

    @property
    def resources(self) -> dict[str, int]:
        return {WORKER_RESOURCE: 1, f"{WORKER_RESOURCE}-{self.index}": 1}


@dataclass
class ClusterState:
    state_dir: str
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    client_port: int
    token_path: str
    num_cpus: int | None
    agent_port: int | None = None  # the dashboard agent that runs submitted jobs (Ray's default 52365 is shared)
    workers: list[WorkerNode] = field(default_factory=list)  # absent from state.json of older, head-only clusters

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """What a client needs in its environment to talk to this cluster (CLI, SDK, ray.init)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}

    def submit_command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env().items())
        return f"{env} ray job submit --address {self.dashboard_url} --working-dir . -- xalign <command> ..."

    def save(self) -> None:
        Path(self.state_dir, "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        f = state_dir / "state.json"
        if not f.is_file():
            return None
        data = json.loads(f.read_text())
        workers = [WorkerNode(**w) for w in data.pop("workers", [])]
        return cls(**data, workers=workers)


def cluster_pids(temp_dir: str) -> list[int]:
    """PIDs of this cluster's processes on every node: those whose command line names its temp dir (GCS,
    raylets, dashboard, log monitor), those whose environment carries its marker (set by `up`: the client server,
    Ray workers, job drivers), and all their descendants. Ray renames its agents and dashboard modules
    (`ray::DashboardAgent`) over their command line and environment, so those are found as children of the
    raylets and the dashboard; after a SIGTERM they can outlive their parent unless stopped with it."""
    me = os.getpid()
    marker = f"{MARKER_ENV}={temp_dir}\0".encode()
    found: set[int] = set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
        if temp_dir in cmd:
            found.add(pid)
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.add(pid)
        except OSError:  # another user's process, or gone
            continue
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes, unless only its main thread exited (seen with the raylet on SIGTERM)
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def kill_pids(pids: list[int], timeout: float = 15.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _location_env() -> dict[str, str]:
    """Absolute data and cache roots for every process of the cluster. A job submitted with `--working-dir .`
    runs from a copy of the checkout in Ray's session folder, where the `../shared/data` default resolves to
    nothing; the cluster's processes (job drivers included) inherit these from `ray start`."""
    from cluster.locations import cache_dir, data_root

    env = {"XALIGN_CACHE": str(cache_dir())}
    root = data_root(required=False)
    if root is not None:
        env["XALIGN_DATA"] = str(root)
    return env


def up(state_dir: Path | None = None, num_cpus: int | None = None, timeout: float = 90.0, workers: int = 0,
       worker_cpus: int = 1) -> ClusterState:
    """Start a private cluster (or return the one already running in `state_dir`, whatever its shape) and wait
    until it takes jobs: the dashboard and job agent answer and, with `workers`, every node is registered alive.

    `workers` adds that many worker raylets with `worker_cpus` CPUs each. Their head then defaults to 1 CPU
    rather than the machine's count, so it still runs drivers, Ray Train's controller and unpinned tasks while the
    CPUs of the simulated nodes roughly add up to the host's. On any failure everything started is stopped by
    PID, the temp dir removed, and the error carries the tail of the log that explains it."""
    state_dir = Path(state_dir or default_state_dir()).resolve()
    existing = ClusterState.load(state_dir)
    if existing and cluster_pids(existing.temp_dir):
        return existing
    if workers < 0 or worker_cpus < 1:
        raise ValueError(f"workers must be >= 0 and worker_cpus >= 1 (got {workers}, {worker_cpus})")
    if num_cpus is None and workers:
        num_cpus = 1
    deadline = time.monotonic() + timeout
    state_dir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes, so Ray's temp dir lives under a short /tmp name.
    temp_dir = tempfile.mkdtemp(prefix="xa-ray-", dir="/tmp")
    token_path = state_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    st = ClusterState(
        state_dir=str(state_dir), temp_dir=temp_dir, gcs_port=free_port(), dashboard_port=free_port(),
        client_port=free_port(), token_path=str(token_path), num_cpus=num_cpus, agent_port=free_port(),
        workers=[WorkerNode(i, worker_cpus, *(free_port() for _ in range(6))) for i in range(1, workers + 1)],
    )
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_bin, "start", "--head", f"--temp-dir={temp_dir}", f"--port={st.gcs_port}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={st.dashboard_port}",
        f"--ray-client-server-port={st.client_port}", f"--dashboard-agent-listen-port={st.agent_port}",
        "--disable-usage-stats", f"--resources={json.dumps({HEAD_RESOURCE: 1})}",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    system_config = worker_pool_config(max(num_cpus or 0, worker_cpus) if workers else num_cpus)
    if workers:
        system_config |= MULTI_NODE_SYSTEM_CONFIG
    cmd.append(f"--system-config={json.dumps(system_config)}")
    env = {**os.environ, **st.env(), **_location_env(), MARKER_ENV: temp_dir}
    try:
        _ray_start(cmd, env, state_dir / "ray-start.log", deadline)
        st.save()  # from here on `down` can stop it, should this process die while waiting
        _wait_dashboard(st, deadline)
        for w in st.workers:
            _ray_start(_worker_command(ray_bin, st, w), env, state_dir / f"ray-start-{w.label}.log", deadline)
        if workers:
            _wait_nodes(st, deadline)
    except BaseException:
        _stop(st)
        raise
    return st


def add_worker(st: ClusterState, num_cpus: int | None = None, timeout: float = 90.0) -> WorkerNode:
    """Start one more worker node (the next index) and wait until it is alive: what an autoscaler or KubeRay does
    after a node is lost, so a run that needs N workers can be placed again."""
    index = max((w.index for w in st.workers), default=0) + 1
    w = WorkerNode(index, num_cpus or (st.workers[0].num_cpus if st.workers else 1),
                   *(free_port() for _ in range(6)))
    deadline = time.monotonic() + timeout
    env = {**os.environ, **st.env(), **_location_env(), MARKER_ENV: st.temp_dir}
    _ray_start(_worker_command(str(Path(sys.executable).with_name("ray")), st, w), env,
               Path(st.state_dir) / f"ray-start-{w.label}.log", deadline)
    st.workers.append(w)
    st.save()
    while w.label not in node_ids(st):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{w.label} did not register alive within {timeout:.0f}s")
        time.sleep(0.5)
    return w


def _worker_command(ray_bin: str, st: ClusterState, w: WorkerNode) -> list[str]:
    """`ray start` of one worker node. It shares the head's temp dir (one session folder; Ray numbers each
    node's sockets and log files) so `cluster_pids` finds its raylet; workers bind OS-chosen ports (0/0)
    rather than the head's 10002-19999 pool, which each raylet would hand out independently; no GPUs, so N
    simulated nodes do not each claim the host's; one log monitor (the head's) reads the shared logs folder."""
    return [
        ray_bin, "start", f"--address={st.address}", f"--temp-dir={st.temp_dir}", f"--num-cpus={w.num_cpus}",
        "--num-gpus=0", f"--resources={json.dumps(w.resources)}", f"--node-manager-port={w.node_manager_port}",
        f"--object-manager-port={w.object_manager_port}", "--min-worker-port=0", "--max-worker-port=0",
        f"--dashboard-agent-listen-port={w.agent_port}", f"--dashboard-agent-grpc-port={w.agent_grpc_port}",
        f"--metrics-export-port={w.metrics_export_port}", f"--runtime-env-agent-port={w.runtime_env_agent_port}",
        f"--object-store-memory={WORKER_OBJECT_STORE_BYTES}", "--include-log-monitor=false", "--disable-usage-stats",
    ]


def _ray_start(cmd: list[str], env: dict[str, str], log: Path, deadline: float) -> None:
    with log.open("w") as fh:
        try:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"`ray start` did not return in time; see {log}:\n{_tail(log)}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed (exit {proc.returncode}); see {log}:\n{_tail(log)}")


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stop(st: ClusterState) -> list[int]:
    """Stop every process of the cluster by PID, sweeping until none is left (Ray workers can appear while
    their raylet shuts down), then remove its temp dir and state file. Returns the PIDs stopped."""
    pids: list[int] = []
    for attempt in range(6):
        found = cluster_pids(st.temp_dir)
        if not found:
            break
        kill_pids(found, timeout=15 if attempt == 0 else 5)
        pids += [p for p in found if p not in pids]
    shutil.rmtree(st.temp_dir, ignore_errors=True)
    Path(st.state_dir, "state.json").unlink(missing_ok=True)
    return pids


def _auth_headers(st: ClusterState) -> dict[str, str]:
    return {"Authorization": f"Bearer {Path(st.token_path).read_text().strip()}"}


def _wait_dashboard(st: ClusterState, deadline: float) -> None:
    import httpx

    headers = _auth_headers(st)
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{st.dashboard_url}/api/version", headers=headers, timeout=2)
            if r.status_code == 200 and _listening(st.agent_port):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {st.dashboard_url} (job agent port {st.agent_port}) did not come up "
                       f"in time; Ray's logs: {st.temp_dir}/session_latest/logs")


def _listening(port: int | None) -> bool:
    """Whether the job agent accepts connections: `ray job submit` fails with "No available agent" before."""
    if port is None:
        return True
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def node_label(resources: dict[str, float]) -> str | None:
    """"head" or "worker-<i>" for a node's resources (a `ray.nodes()` entry's "Resources", or the state API's
    "resources_total"); None for a node this module did not start."""
    if HEAD_RESOURCE in resources:
        return "head"
    prefix = f"{WORKER_RESOURCE}-"
    return next((f"worker-{k[len(prefix):]}" for k in resources if k.startswith(prefix)), None)


def _state_api_nodes(st: ClusterState) -> list[dict]:
    """Every node the GCS knows, dead ones included, from the dashboard's state API (no driver needed)."""
    import httpx

    r = httpx.get(f"{st.dashboard_url}/api/v0/nodes", params={"limit": 1000, "detail": "true"},
                  headers=_auth_headers(st), timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]["result"]


def node_ids(st: ClusterState) -> dict[str, str]:
    """Ray node id of every ALIVE node by label ("head", "worker-<i>"), e.g. to compare with
    `ray.get_runtime_context().get_node_id()` inside a task."""
    return {label: n["node_id"] for n in _state_api_nodes(st)
            if n["state"] == "ALIVE" and (label := node_label(n.get("resources_total") or {}))}


def _wait_nodes(st: ClusterState, deadline: float) -> None:
    import httpx

    want = {"head", *(w.label for w in st.workers)}
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            seen = node_ids(st)
            if want <= seen.keys():
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    missing = sorted(want - seen.keys())
    logs = Path(st.temp_dir, "session_latest", "logs")
    tails = "\n".join(f"--- {f.name}:\n{_tail(f, 1000)}" for f in sorted(logs.glob("raylet*.out"))[-2:])
    raise TimeoutError(f"nodes {missing} did not register alive in time (alive: {sorted(seen)}):\n{tails}")


def raylet_pids(st: ClusterState) -> dict[str, int | None]:
    """PID of each node's raylet by label, None where it is not running. A worker's raylet is the one started
    with its node manager port; the head's is the one whose port is none of theirs (Ray picked it)."""
    ports = {f"--node_manager_port={w.node_manager_port}": w.label for w in st.workers}
    found: dict[str, int | None] = {"head": None, **{w.label: None for w in st.workers}}
    for pid in cluster_pids(st.temp_dir):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not args[0].endswith("/raylet") or not _alive(pid):
            continue
        label = next((ports[a] for a in args if a in ports), "head")
        found[label] = pid
    return found


def worker_raylet_pid(st: ClusterState, index: int) -> int | None:
    """PID of worker `index`'s raylet (1-based), None if it is not running."""
    if not 1 <= index <= len(st.workers):
        raise ValueError(f"no worker {index}: this cluster has {len(st.workers)}")
    return raylet_pids(st)[f"worker-{index}"]


def kill_worker(st: ClusterState, index: int) -> int:
    """SIGKILL worker `index`'s raylet, as if the node were lost: its agents and Ray workers exit with it and
    the GCS declares the node dead after its health checks fail (a few seconds, MULTI_NODE_SYSTEM_CONFIG).
    Returns the PID killed. The node is not restarted; `down` still sweeps what is left."""
    pid = worker_raylet_pid(st, index)
    if pid is None:
        raise ProcessLookupError(f"worker-{index}'s raylet is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def status(state_dir: Path | None = None) -> tuple[ClusterState | None, list[int]]:
    st = ClusterState.load(Path(state_dir or default_state_dir()))
    return st, (cluster_pids(st.temp_dir) if st else [])


def down(state_dir: Path | None = None) -> list[int]:
    """Stop exactly this cluster's processes, on every node, and remove its temp dir; returns the PIDs stopped."""
    st = ClusterState.load(Path(state_dir or default_state_dir()))
    return _stop(st) if st is not None else []
