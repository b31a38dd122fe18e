"""A private local Ray head for `ray job submit`: own temp dir, own ports, own auth token, stopped by PID.

`ray stop` would kill every Ray process on the machine, other users' clusters included, so xalign
never calls it: it records the cluster's state in a folder and stops exactly the processes whose
command line names that cluster's temp dir.
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
from dataclasses import asdict, dataclass
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
        return cls(**json.loads(f.read_text())) if f.is_file() else None


def cluster_pids(temp_dir: str) -> list[int]:
    """PIDs of every process whose command line names this cluster's temp dir (head, workers, agents)."""
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmd:
            pids.append(int(entry.name))
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
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


def up(state_dir: Path | None = None, num_cpus: int | None = None, timeout: float = 90.0) -> ClusterState:
    state_dir = Path(state_dir or default_state_dir()).resolve()
    existing = ClusterState.load(state_dir)
    if existing and cluster_pids(existing.temp_dir):
        return existing
    state_dir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes, so Ray's temp dir lives under a short /tmp name.
    temp_dir = tempfile.mkdtemp(prefix="xa-ray-", dir="/tmp")
    token_path = state_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    st = ClusterState(
        state_dir=str(state_dir), temp_dir=temp_dir, gcs_port=free_port(), dashboard_port=free_port(),
        client_port=free_port(), token_path=str(token_path), num_cpus=num_cpus, agent_port=free_port(),
    )
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [
        str(ray_bin), "start", "--head", f"--temp-dir={temp_dir}", f"--port={st.gcs_port}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={st.dashboard_port}",
        f"--ray-client-server-port={st.client_port}", f"--dashboard-agent-listen-port={st.agent_port}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    cmd.append(f"--system-config={json.dumps(worker_pool_config(num_cpus))}")
    env = {**os.environ, **st.env(), **_location_env()}
    log = state_dir / "ray-start.log"
    with log.open("w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        kill_pids(cluster_pids(temp_dir))
        raise RuntimeError(f"ray start failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    st.save()
    _wait_dashboard(st, timeout)
    return st


def _wait_dashboard(st: ClusterState, timeout: float) -> None:
    import httpx

    token = Path(st.token_path).read_text().strip()
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = httpx.get(f"{st.dashboard_url}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=2)
            if r.status_code == 200 and _listening(st.agent_port):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {st.dashboard_url} (job agent port {st.agent_port}) did not come up "
                       f"within {timeout:.0f}s")


def _listening(port: int | None) -> bool:
    """Whether the job agent accepts connections: `ray job submit` fails with "No available agent" before."""
    if port is None:
        return True
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def status(state_dir: Path | None = None) -> tuple[ClusterState | None, list[int]]:
    st = ClusterState.load(Path(state_dir or default_state_dir()))
    return st, (cluster_pids(st.temp_dir) if st else [])


def down(state_dir: Path | None = None) -> list[int]:
    """Stop exactly this cluster's processes and remove its temp dir; returns the PIDs stopped."""
    state_dir = Path(state_dir or default_state_dir())
    st = ClusterState.load(state_dir)
    if st is None:
        return []
    pids = cluster_pids(st.temp_dir)
    kill_pids(pids)
    # Workers can appear while the head shuts down: sweep until nothing names the temp dir.
    for _ in range(5):
        late = cluster_pids(st.temp_dir)
        if not late:
            break
        kill_pids(late, timeout=5)
        pids += late
    shutil.rmtree(st.temp_dir, ignore_errors=True)
    (state_dir / "state.json").unlink(missing_ok=True)
    return pids
