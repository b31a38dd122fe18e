"""A head and two worker raylets on this machine (`xalign cluster up --workers 2`): placement forced by custom
resource, losing a node, and stopping every process by PID.

One cluster serves the module and the tests run in file order (the last ones kill a worker and stop the cluster).
Drivers run in subprocesses so that the test process never joins the cluster or takes on its auth settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cluster import local_cluster as lc
from xalign.cli import main


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_driver(st: lc.ClusterState, body: str, timeout: float = 180) -> Any:
    """Run `body` as a Ray driver on the cluster, with the cluster's token; it prints one JSON line last."""
    code = (f"import json, os, time\nimport ray\nray.init(address={st.address!r}, logging_level='ERROR', "
            f"log_to_driver=False)\n" + textwrap.dedent(body))
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **st.env()}, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    state_dir = tmp_path_factory.mktemp("multinode")
    args = ["cluster", "up", "--state-dir", str(state_dir), "--num-cpus", "1", "--workers", "2", "--worker-cpus", "1"]
    try:
        assert main(args) == 0
        st = lc.ClusterState.load(state_dir)
        assert st is not None
        yield st
    finally:  # by PID, whatever failed; a no-op after test_down_stops_every_process
        lc.down(state_dir)


def test_state_of_older_head_only_clusters_still_loads(tmp_path: Path):
    old = {"state_dir": str(tmp_path), "temp_dir": "/tmp/xa-ray-none", "gcs_port": 1, "dashboard_port": 2,
           "client_port": 3, "token_path": str(tmp_path / "auth_token"), "num_cpus": None, "agent_port": 4}
    (tmp_path / "state.json").write_text(json.dumps(old))
    st = lc.ClusterState.load(tmp_path)
    assert st is not None and st.workers == []
    with pytest.raises(ValueError):
        lc.worker_raylet_pid(st, 1)


def test_node_label():
    assert lc.node_label({"CPU": 1.0, "xalign-head": 1.0, "node:__internal_head__": 1.0}) == "head"
    assert lc.node_label({"CPU": 1.0, "xalign-worker": 1.0, "xalign-worker-2": 1.0}) == "worker-2"
    assert lc.node_label({"CPU": 4.0}) is None


def test_three_nodes_alive_with_their_resources(cluster: lc.ClusterState):
    st = cluster
    assert [w.index for w in st.workers] == [1, 2]
    ports = [p for w in st.workers for p in vars(w).values() if p not in (w.index, w.num_cpus)]
    assert len(set(ports)) == len(ports), "worker raylets on one IP need distinct ports"
    pids = lc.raylet_pids(st)
    assert all(pids.values()) and len(set(pids.values())) == 3, pids
    nodes = run_driver(st, """
        print(json.dumps([{"alive": n["Alive"], "id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes()]))
    """)
    by_label = {lc.node_label(n["resources"]): n for n in nodes if n["alive"]}
    assert sorted(by_label) == ["head", "worker-1", "worker-2"]
    assert by_label["head"]["resources"]["CPU"] == 1
    for i in (1, 2):
        res = by_label[f"worker-{i}"]["resources"]
        assert res["CPU"] == 1 and res["xalign-worker"] == 1 and res[f"xalign-worker-{i}"] == 1
    assert {label: n["id"] for label, n in by_label.items()} == lc.node_ids(st)


def test_custom_resource_forces_placement(cluster: lc.ClusterState):
    where = run_driver(cluster, """
        def node_id():
            return ray.get_runtime_context().get_node_id()
        on = {i: ray.remote(resources={f"xalign-worker-{i}": 0.01})(node_id).remote() for i in (1, 2)}
        print(json.dumps({f"worker-{i}": ray.get(ref) for i, ref in on.items()}))
    """)
    ids = lc.node_ids(cluster)
    assert where["worker-1"] == ids["worker-1"] and where["worker-2"] == ids["worker-2"]
    assert where["worker-1"] != where["worker-2"]


def test_killed_worker_is_reported_dead(cluster: lc.ClusterState, capsys: pytest.CaptureFixture[str]):
    st = cluster
    # A detached actor on worker 1 outlives its driver: a process of that node to watch die with the node.
    actor_pid = run_driver(st, """
        @ray.remote(resources={"xalign-worker-1": 0.01}, num_cpus=0)
        class Probe:
            def pid(self):
                return os.getpid()
        probe = Probe.options(name="probe", namespace="test", lifetime="detached").remote()
        print(json.dumps(ray.get(probe.pid.remote())))
    """)
    assert _running(actor_pid)
    worker_1 = lc.node_ids(st)["worker-1"]
    raylet = lc.worker_raylet_pid(st, 1)
    assert lc.kill_worker(st, 1) == raylet
    seen = run_driver(st, f"""
        start = time.monotonic()
        while time.monotonic() - start < 60:
            alive = {{n["NodeID"]: n["Alive"] for n in ray.nodes()}}
            if not alive[{worker_1!r}]:
                break
            time.sleep(0.2)
        on_2 = ray.get(ray.remote(resources={{"xalign-worker-2": 0.01}})(
            lambda: ray.get_runtime_context().get_node_id()).remote())
        print(json.dumps({{"alive": alive[{worker_1!r}], "after_s": time.monotonic() - start, "on_2": on_2}}))
    """)
    assert not seen["alive"], "worker 1 still reported alive 60 s after its raylet was killed"
    assert seen["on_2"] == lc.node_ids(st)["worker-2"], "the surviving worker no longer runs tasks"
    assert not _running(raylet) and lc.worker_raylet_pid(st, 1) is None
    assert not _running(actor_pid), "the lost node's worker process survived its raylet"
    assert "worker-1" not in lc.node_ids(st)
    capsys.readouterr()
    assert main(["cluster", "status", "--state-dir", st.state_dir]) == 0
    status = capsys.readouterr().out
    assert "worker-1" in status and "raylet not running" in status
    assert f"raylet PID {lc.worker_raylet_pid(st, 2)} alive" in status


def test_down_stops_every_process(cluster: lc.ClusterState):
    st = cluster
    before = lc.cluster_pids(st.temp_dir)
    assert lc.raylet_pids(st)["head"] in before and lc.worker_raylet_pid(st, 2) in before
    assert main(["cluster", "down", "--state-dir", st.state_dir]) == 0
    assert lc.cluster_pids(st.temp_dir) == []
    assert [p for p in before if _running(p)] == []
    assert not Path(st.temp_dir).exists()
    assert main(["cluster", "status", "--state-dir", st.state_dir]) == 1
