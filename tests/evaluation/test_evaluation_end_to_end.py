"""A small end-to-end evaluation of a tiny model through real vLLM: Ray Data engine actors, then the same
model behind a plain vLLM OpenAI server (`--endpoint`), which must give the same hypotheses, then compare.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from cluster import prompts
from cluster.engine import EngineSettings, engine_dtype
from cluster.local_cluster import free_port
from evaluation.generation.requests import prompt_text
from evaluation.outputs import find_run, read_generations, read_scores
from xalign.cli import main

pytestmark = pytest.mark.slow

SUITE = ["--suite", "flores200-quick"]
OVERRIDES = ["limit=3", "languages=[de, zh]", "generation.max_tokens=12", "engine.max_model_len=512"]
LINEAGE = {"dataset_id": "c0ffee123456", "run_id": "sft-tiny", "step": 10, "base_model": "tiny-llama"}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One embedded cluster for the module: each `xalign evaluate` below attaches instead of starting its own."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def export(chatty_model, tmp_path_factory):
    """The chatty tiny model laid out like an `xalign train` export, lineage.json beside it."""
    root = tmp_path_factory.mktemp("train-run")
    shutil.copytree(chatty_model, root / "export")
    (root / "lineage.json").write_text(json.dumps(LINEAGE))
    return root / "export"


@pytest.fixture(scope="module")
def openai_server(export):
    port = free_port()
    # The same precision xalign's engine picks on this host (`dtype: auto`), so both paths decode alike.
    dtype = engine_dtype(EngineSettings()).dtype
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(export), "--host", "127.0.0.1",
         "--port", str(port), "--dtype", dtype, "--max-model-len", "512", "--enforce-eager",
         "--distributed-executor-backend", "uni"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited: {proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("vLLM server did not come up in 300 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ray_data_vllm_then_endpoint_then_compare(export, openai_server, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = str(tmp_path)
    assert main(["evaluate", *SUITE, "--model", str(export), "--output", out, *OVERRIDES, "run_id=vllm"]) == 0
    run = find_run("vllm", out)
    doc = read_scores(run)
    assert doc["run"]["backend"] == ["ray-data-vllm"] and doc["run"]["directions"] == ["en-de", "en-zh", "de-en",
                                                                                         "zh-en"]
    tok = AutoTokenizer.from_pretrained(export)
    for row in doc["rows"]:
        # Every score row names the model, its weights and the dataset manifest it was trained on.
        assert row["model"]["dataset_manifest_hash"] == "c0ffee123456" and row["model"]["train_run_id"] == "sft-tiny"
        assert row["system"] == "sft-tiny-step10"
        assert row["model"]["fingerprint"] == doc["systems"]["sft-tiny-step10"]["fingerprint"]
        gen = read_generations(run, "sft-tiny-step10", row["direction"])
        assert len(gen) == 3
        for g in gen:
            req = {"src": row["src"], "tgt": row["tgt"], "source": g["source"]}
            assert g["prompt"] == prompt_text(req)
            assert g["prompt_tokens"] == len(prompts.encode_prompt(tok, prompts.translation_messages(
                row["src"], row["tgt"], g["source"])))
            assert 0 < g["output_tokens"] <= 12 and g["hypothesis"] and prompts.END not in g["raw"]
        meta = json.loads(run.meta("sft-tiny-step10", row["direction"]).read_text())
        assert meta["model"]["lineage"]["step"] == 10 and meta["engine"]["max_model_len"] == 512
    assert doc["run"]["generation"][0]["segments_per_s"] > 0
    assert (run.root / "report.html").stat().st_size > 10_000

    assert main(["evaluate", *SUITE, "--endpoint", openai_server, "--output", out, *OVERRIDES, "run_id=endpoint"]) == 0
    ep = find_run("endpoint", out)
    ep_doc = read_scores(ep)
    served = next(iter(ep_doc["systems"].values()))
    assert served["endpoint"]["api"] == "chat" and served["dataset_manifest_hash"] == "c0ffee123456"
    system = next(iter(ep_doc["systems"]))
    for key in doc["run"]["directions"]:
        # Same model, same canonical prompt (token ids vs the server's chat template), greedy: same output.
        assert run.hyps("sft-tiny-step10", key).read_text() == ep.hyps(system, key).read_text()

    capsys.readouterr()
    assert main(["evaluate", "compare", "vllm", "endpoint", "--output", out, "--samples", "50"]) == 0
    assert "not compared" not in capsys.readouterr().out
    result = json.loads((tmp_path / "compare-vllm-vs-endpoint" / "compare.json").read_text())
    assert all(v["bleu"]["delta"] == 0 for v in result["directions"].values())


def test_few_shot_prompt_through_ray_data_vllm(export, tmp_path):
    """The base-model reference point: plain few-shot text, examples held out of the scored segments."""
    from transformers import AutoTokenizer

    from cluster.config import load_recipe
    from cluster.locations import data_root
    from evaluation.directions import Direction
    from evaluation.loaders import open_test_set
    from evaluation.recipe import EvalRecipe
    from evaluation.runner import evaluate_model

    # The Python entry point (a suite aimed at a model on chosen directions, as the demo aims its suite).
    suite = load_recipe(EvalRecipe, "eval-flores200-demo",
                        ["generation.max_tokens=12", "engine.max_model_len=512", "generation.shots=2"])
    run, doc = evaluate_model(export, ["en->de", "de-en"], limit=3, prompt="few_shot", output_dir=tmp_path,
                              run_id="fewshot", suite=suite)
    assert run.root == tmp_path / "fewshot" and doc == read_scores(run)
    assert doc["run"]["prompt"] == "few_shot" and doc["run"]["directions"] == ["en-de", "de-en"]
    assert doc["run"]["metrics"] == ["bleu", "chrf", "off_target"]
    tok = AutoTokenizer.from_pretrained(export)
    full = open_test_set("flores200", data_root() / "flores200" / "dev_subset510").load(Direction.parse("de-en"))
    shots = list(zip(full.sources[-2:], full.references[0][-2:]))
    gen = read_generations(run, "sft-tiny-step10", "de-en")
    assert [g["id"] for g in gen] == full.ids[:3]
    for g in gen:
        assert g["prompt"] == prompts.few_shot_prompt("de", "en", g["source"], shots)
        assert g["prompt_tokens"] == 1 + len(tok.encode(g["prompt"], add_special_tokens=False))
        assert "\n" not in g["raw"] and prompts.START not in g["prompt"]
    meta = json.loads(run.meta("sft-tiny-step10", "de-en").read_text())
    assert meta["prompt"]["style"] == "few_shot" and meta["prompt"]["shots"] == 2
    assert "prompt `few_shot`" in (run.root / "report.md").read_text()


def test_evaluate_under_ray_job_submit(export, private_cluster, submit_job, tmp_path):
    """`xalign evaluate` as a Ray job against a cluster from `xalign cluster up`: the job's driver runs in a
    copy of the checkout, finds the suite's data through the cluster's environment and its vLLM engine actors
    run on that cluster."""
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "XALIGN_DATA"}
    env.update(private_cluster.env(), PATH=f"{bin_dir}:{os.environ['PATH']}")
    runtime_env = {"env_vars": {"PATH": env["PATH"], "XALIGN_NO_PROGRESS": "1"}}
    job = submit_job(
        [str(bin_dir / "ray"), "job", "submit", "--address", private_cluster.dashboard_url, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "xalign", "evaluate", *SUITE, "--model", str(export), "--output", str(tmp_path), "limit=2",
         "languages=[de]", "generation.max_tokens=8", "engine.max_model_len=512", "run_id=job"], env)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    doc = read_scores(find_run("job", str(tmp_path)))
    assert doc["run"]["backend"] == ["ray-data-vllm"] and doc["run"]["directions"] == ["en-de", "de-en"]
    assert all(len(read_generations(find_run("job", str(tmp_path)), row["system"], row["direction"])) == 2
               for row in doc["rows"])
    assert all("chrf" in row["scores"] for row in doc["rows"])
