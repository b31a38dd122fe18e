"""Beyond one machine: `xalign prepare` and `xalign train` on a 3-node local Ray cluster (a head and two worker
nodes, separate raylets) whose artifacts live in a real S3 server, so no stage relies on a disk the nodes share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pyarrow.fs import FileSelector, FileType

from cluster import local_cluster, storage

pytestmark = pytest.mark.slow

XALIGN = str(Path(sys.executable).with_name("xalign"))


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory):
    state_dir = tmp_path_factory.mktemp("three-nodes")
    st = local_cluster.up(state_dir, num_cpus=1, workers=2, worker_cpus=1)
    try:
        yield st
    finally:
        local_cluster.down(state_dir)
        assert local_cluster.cluster_pids(st.temp_dir) == []


def xalign(st: local_cluster.ClusterState, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it against the cluster (its token in the environment), from a folder of its own."""
    out = subprocess.run([XALIGN, *args, "--address", st.address], env={**os.environ, **st.env(), **env}, cwd=cwd,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, (args[:3], out.stdout[-3000:], out.stderr[-3000:])
    return out


def listing(uri: str) -> list[str]:
    fs, path = storage.filesystem(uri)
    return sorted(i.path[len(path) + 1:] for i in fs.get_file_info(FileSelector(path, recursive=True))
                  if i.type == FileType.File)


def actors(st: local_cluster.ClusterState) -> list[dict]:
    """Every actor of the cluster, dead ones included, from Ray's state API."""
    r = httpx.get(f"{st.dashboard_url}/api/v0/actors", params={"limit": 1000, "detail": "true"},
                  headers={"Authorization": f"Bearer {Path(st.token_path).read_text().strip()}"}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]["result"]


def train_workers(st: local_cluster.ClusterState, pid: int | None = None) -> dict[str, str]:
    """The node of every Ray Train worker actor started so far (or of the one with `pid`), by the node's label."""
    labels = {node: label for label, node in local_cluster.node_ids(st).items()}
    return {a["actor_id"]: labels.get(a["node_id"], a["node_id"]) for a in actors(st)
            if a["class_name"] == "RayTrainWorker" and (pid is None or a.get("pid") == pid)}


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    return s3_server.bucket("scale-out")


@pytest.fixture(scope="module")
def dataset(three_nodes, bucket: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`xalign prepare` on the cluster, straight to S3: its writer tasks run on every node. The recipe's default
    `output_dir: outputs/datasets` lands under XALIGN_ARTIFACTS, as in a pod of the Helm chart's s3 mode."""
    cwd = tmp_path_factory.mktemp("prepare")
    xalign(three_nodes, cwd, "prepare", "--recipe", "xllms100-mini", f"model={tiny_model}", "max_seq_len=128",
           "sources.ntrex.languages=[eng_Latn, deu_Latn, fra_Latn, zho_Hans]", "sources.ntrex.limit=60",
           "mixing.total=300", "filters.dedup.near=false", "ray.progress=false", XALIGN_ARTIFACTS=bucket)
    assert not any(cwd.iterdir())  # neither the dataset nor its log went to the working folder
    [name] = {f.split("/")[0] for f in listing(f"{bucket}/outputs/datasets")}
    return f"{bucket}/outputs/datasets/{name}"


def train_args(tiny_model: Path, dataset: str, bucket: str, runs: Path, name: str) -> list[str]:
    return ["train", "--recipe", "train-lora-tiny", f"model.base={tiny_model}", f"data.path={dataset}",
            f"checkpoint.storage={bucket}/checkpoints", "scaling.resources={xalign-worker: 1}", f"run.name={name}",
            f"run.output_dir={runs}", "training.max_steps=8", "checkpoint.every_steps=4", "run.max_failures=1"]


@pytest.fixture(scope="module")
def spread_run(three_nodes, dataset: str, bucket: str, tiny_model: Path, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("train")
    xalign(three_nodes, cwd, *train_args(tiny_model, dataset, bucket, cwd / "runs", "spread"))
    return cwd


def test_prepare_and_train_across_nodes_through_object_storage(three_nodes, dataset: str, bucket: str,
                                                               spread_run: Path):
    st, runs = three_nodes, spread_run / "runs"
    assert "checksums.json" in listing(dataset)
    # One Ray Train worker on each worker node: the custom resource placed them, not luck.
    assert sorted(train_workers(st).values()) == ["worker-1", "worker-2"]
    # Every rank's DeepSpeed shard went to S3 from its own node, in the step's checkpoint folder.
    ckpt = [f for f in listing(f"{bucket}/checkpoints/spread")]
    last = sorted({f.split("/")[0] for f in ckpt if f.startswith("checkpoint_0")})[-1]
    in_last = [f for f in ckpt if f.startswith(last)]
    assert last == "checkpoint_000008"
    assert {r for r in (0, 1) if any(f"zero_pp_rank_{r}_" in f for f in in_last)} == {0, 1}, in_last
    status = json.loads((runs / "spread" / "status.json").read_text())
    assert status["state"] == "completed" and status["export_uri"] == f"{bucket}/checkpoints/spread/export"
    lineage = json.loads((runs / "spread" / "export" / "lineage.json").read_text())
    assert lineage["dataset_path"] == dataset
    # The published export: each folder sealed, fetchable on its own on any node.
    assert storage.fetch_dir(f"{status['export_uri']}/adapter", cache=spread_run / "fetched").is_dir()
    assert not (spread_run / "outputs").exists()  # nothing of the run fell back to a local default


def test_a_lost_node_is_replaced_and_the_run_resumes_from_object_storage(three_nodes, dataset: str, bucket: str,
                                                                       spread_run: Path, tiny_model: Path,
                                                                       tmp_path: Path):
    """The node of the last rank dies (its raylet SIGKILLed) while that rank holds after step 4's checkpoint; a new
    node joins, as a KubeRay worker group would replace it, and Ray Train restarts both workers from the S3
    checkpoint: the same weights as the uninterrupted run."""
    from safetensors.torch import load_file

    st, runs = three_nodes, tmp_path / "runs"
    proc = subprocess.Popen([XALIGN, *train_args(tiny_model, dataset, bucket, runs, "lost"), "--address", st.address],
                            env={**os.environ, **st.env(), "XALIGN_TRAIN_HOLD_AFTER_STEP": "4"}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        holding = runs / "lost" / ".holding"
        deadline = time.monotonic() + 600
        while not holding.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        held = json.loads(holding.read_text())
        nodes = {a: label for a, label in train_workers(st, pid=held["pid"]).items()}
        [label] = nodes.values()
        killed = local_cluster.kill_worker(st, int(label.removeprefix("worker-")))
        replacement = local_cluster.add_worker(st)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            local_cluster.kill_pids([proc.pid])
    assert proc.returncode == 0, out[-3000:]
    assert held["step"] == 4 and killed != held["pid"]
    status = json.loads((runs / "lost" / "status.json").read_text())
    assert (status["state"], status["step"]) == ("completed", 8)
    assert replacement.label in train_workers(st).values()  # the restarted group used the new node

    ref = load_file(spread_run / "runs" / "spread" / "export" / "adapter" / "adapter_model.safetensors")
    got = load_file(runs / "lost" / "export" / "adapter" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    assert max((ref[k] - got[k]).abs().max().item() for k in ref) <= 1e-6


def test_evaluate_and_serve_the_export_from_object_storage(three_nodes, bucket: str, spread_run: Path,
                                                          tmp_path: Path):
    """The run's published export, read from S3 by nodes that never saw the training: `xalign evaluate` writes its
    report to S3, and `xalign serve` hosts the merged model on the head (which trained nothing)."""
    st = three_nodes
    model = f"{bucket}/checkpoints/spread/export/model"
    xalign(st, tmp_path, "evaluate", "--suite", "flores200-quick", "--model", model, "--output", f"{bucket}/reports",
           "limit=2", "languages=[de]", "generation.max_tokens=8", "engine.max_model_len=512", "run_id=spread")
    report = listing(f"{bucket}/reports/spread")
    assert {"scores.json", "report.md", "checksums.json"} <= set(report)
    scores = json.loads(storage.read_text(f"{bucket}/reports/spread/scores.json"))
    assert scores["run"]["directions"] == ["en-de", "de-en"]

    port = local_cluster.free_port()
    try:
        xalign(st, tmp_path, "serve", "--recipe", "serve-tiny", "--detach", f"engine.model={model}",
               "served_model_name=spread", "deployment.num_cpus=0.5", "deployment.resources={xalign-head: 0.01}",
               f"http.port={port}", XALIGN_ARTIFACTS=bucket)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "spread", "prompt": "Hello",
                                                                         "max_tokens": 4}, timeout=120)
        assert r.status_code == 200, r.text
        replicas = [a for a in actors(st) if a["class_name"].endswith(":XalignServer") and a["state"] == "ALIVE"]
        labels = {node: label for label, node in local_cluster.node_ids(st).items()}
        assert [labels[a["node_id"]] for a in replicas] == ["head"]
        assert not (tmp_path / "outputs").exists()
    finally:  # the replica's CPU goes back to the cluster for the tests after this one
        subprocess.run([str(Path(sys.executable).with_name("serve")), "shutdown", "-y", "--address",
                        st.dashboard_url], env={**os.environ, **st.env()}, capture_output=True, timeout=300)


def test_ray_job_submit_to_the_cluster_gives_the_same_dataset(three_nodes, bucket: str, dataset: str, tiny_model: Path,
                                                              submit_job):
    """The same `xalign prepare` as a Ray job: its driver runs on the cluster (head), its tasks on every node, its
    output in S3, with the same dataset id as the one the CLI built from outside."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **three_nodes.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    runtime_env = {"env_vars": {"PATH": env["PATH"], "XALIGN_NO_PROGRESS": "1", "XALIGN_ARTIFACTS": f"{bucket}/job"}}
    job = submit_job(
        [str(bin_dir / "ray"), "job", "submit", "--address", three_nodes.dashboard_url, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--", "xalign", "prepare", "--recipe", "xllms100-mini",
         f"model={tiny_model}", "max_seq_len=128", "sources.ntrex.languages=[eng_Latn, deu_Latn, fra_Latn, zho_Hans]",
         "sources.ntrex.limit=60", "mixing.total=300", "filters.dedup.near=false", "ray.progress=false"], env)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    name = dataset.rsplit("/", 1)[-1]
    assert {f.split("/")[0] for f in listing(f"{bucket}/job/outputs/datasets")} == {name}  # the same dataset id
    assert storage.read_text(f"{bucket}/job/outputs/datasets/{name}/manifest.json") == \
        storage.read_text(f"{dataset}/manifest.json")


def test_a_run_continues_from_its_mirror_in_object_storage(three_nodes, dataset: str, bucket: str, spread_run: Path,
                                                           tiny_model: Path, tmp_path: Path):
    """Stopped after step 4 on one machine, continued on "another" (a fresh working folder, the first one gone)
    from nothing but `--resume <run_uri>`: the recipe comes from the run's mirror, the DeepSpeed state from the S3
    checkpoint; the weights equal the uninterrupted run's."""
    import shutil

    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    xalign(three_nodes, first, *train_args(tiny_model, dataset, bucket, first / "runs", "moved"), "--stop-after-step",
           "4")
    status = json.loads((first / "runs" / "moved" / "status.json").read_text())
    assert (status["state"], status["step"]) == ("stopped", 4)
    run_uri = status["run_uri"]
    assert run_uri == f"{bucket}/checkpoints/moved/run"
    shutil.rmtree(first)

    out = xalign(three_nodes, second, "train", "--resume", run_uri)
    assert "completed at step 8" in out.stdout.replace("\n", " "), out.stdout[-2000:]
    ref = load_file(spread_run / "runs" / "spread" / "export" / "adapter" / "adapter_model.safetensors")
    # The recipe's run.output_dir was the first folder: the continued run lands there again, on this machine.
    got = load_file(first / "runs" / "moved" / "export" / "adapter" / "adapter_model.safetensors")
    assert max((ref[k] - got[k]).abs().max().item() for k in ref) <= 1e-6
