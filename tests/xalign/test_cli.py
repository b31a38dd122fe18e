import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import local_cluster
from xalign.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_imports_smoke():
    import deepspeed  # noqa: F401
    import peft  # noqa: F401
    import ray
    import sacrebleu  # noqa: F401
    import torch
    import transformers  # noqa: F401
    import vllm  # noqa: F401

    assert torch.__version__.startswith("2.13.0")
    assert ray.__version__ == "2.60.0"


def test_console_script_and_doctor():
    out = subprocess.run([str(BIN / "xalign"), "doctor"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("torch", "ray", "deepspeed", "vllm", "transformers", "COMET environment", "default model"):
        assert name in out.stdout
    assert "all checks passed" in out.stdout


def test_parser_rejects_unknown_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nope"])


def test_cluster_up_status_submit_down(tmp_path):
    state = tmp_path / "state"
    assert main(["cluster", "up", "--state-dir", str(state), "--num-cpus", "1"]) == 0
    st = local_cluster.ClusterState.load(state)
    try:
        pids = local_cluster.cluster_pids(st.temp_dir)
        assert pids, "no processes found for the cluster's temp dir"
        assert main(["cluster", "status", "--state-dir", str(state)]) == 0
        # A real `ray job submit` of a trivial entry point, with the cluster's private token.
        env = {**os.environ, **st.env(), "PATH": f"{BIN}:{os.environ['PATH']}"}
        for _ in range(10):  # the agent registers with the head a moment after it listens
            job = subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--address", st.dashboard_url, "--",
                 sys.executable, "-c", "import ray; ray.init(); print('nodes', len(ray.nodes()))"],
                capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
            )
            if "No available agent" not in job.stderr:
                break
            time.sleep(5)
        assert job.returncode == 0, job.stdout + job.stderr
        assert "nodes 1" in job.stdout
        # Without the token the dashboard refuses the submission.
        env_no = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        env_no["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
        denied = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", st.dashboard_url],
            capture_output=True, text=True, timeout=120, env=env_no, cwd=tmp_path,
        )
        assert denied.returncode != 0
    finally:
        assert main(["cluster", "down", "--state-dir", str(state)]) == 0
    assert local_cluster.cluster_pids(st.temp_dir) == []
    assert not Path(st.temp_dir).exists()
    assert main(["cluster", "status", "--state-dir", str(state)]) == 1


def test_embedded_session_stops_its_processes(tmp_path):
    import ray

    from cluster.ray_session import ray_session

    def pid_after_barrier(folder: str, parties: int) -> int:
        """Holds a worker until `parties` tasks run at once, so a round occupies that many distinct workers
        (else Ray may run both tasks one after the other on the first worker that is up). Defined here so that
        it travels by value: workers cannot import the test module."""
        Path(folder, str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(folder)) < parties and time.monotonic() < deadline:
            time.sleep(0.05)
        return os.getpid()

    with ray_session(num_cpus=1) as address:
        assert ray.is_initialized() and address
        temp_dir = ray._private.worker._global_node.get_temp_dir_path()
        assert ray.get(ray.remote(lambda: os.environ.get("HF_HUB_OFFLINE")).remote()) == "1"
        # Half-CPU tasks run two workers per CPU; both stay for the next stage instead of being killed after
        # Ray's default 1 s idle limit (one idle worker per CPU) and started again (worker_pool_config).
        task = ray.remote(num_cpus=0.5)(pid_after_barrier)
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        first = set(ray.get([task.remote(str(tmp_path / "a"), 2) for _ in range(2)]))
        time.sleep(3)
        assert len(first) == 2 and set(ray.get([task.remote(str(tmp_path / "b"), 2) for _ in range(2)])) == first
    assert not ray.is_initialized()
    assert local_cluster.cluster_pids(temp_dir) == []
