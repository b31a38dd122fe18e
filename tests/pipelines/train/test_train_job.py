"""`xalign train` submitted with `ray job submit --working-dir .` to a private cluster started by the test:
ZeRO-3 SFT whose driver is SIGKILLed mid-run (after the step-4 checkpoint) and continued with
`xalign train --resume`; the per-rank partitions must consolidate into the exported Hugging Face model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.train.metrics import read_metrics

# Module fixtures train real runs: on a loaded 2-core machine the first setup alone can pass the default 900 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def _driver_pid(run_dir: Path) -> int:
    return json.loads((run_dir / "status.json").read_text())["driver_pid"]


def test_ray_job_submit_driver_killed_then_resumed(private_cluster, train_dataset, tiny_model, tmp_path,
                                                   held_killer, submit_job):
    out = tmp_path / "runs"
    run = out / "z3"
    env = {**os.environ, **private_cluster.env(), "PATH": f"{BIN}:{os.environ['PATH']}", "XALIGN_NO_PROGRESS": "1"}
    # The drill pauses rank 1 after step 5 (the latest checkpoint is step 4) so the driver dies at a known point.
    runtime_env = {"env_vars": {"PATH": env["PATH"], "XALIGN_NO_PROGRESS": "1", "XALIGN_TRAIN_HOLD_AFTER_STEP": "5"}}
    killer = held_killer(run, pid_of=_driver_pid)
    job = submit_job(
        [str(BIN / "ray"), "job", "submit", "--address", private_cluster.dashboard_url, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "xalign", "train", "--recipe", "train-sft-tiny-zero3", f"model.base={tiny_model}",
         f"data.path={train_dataset}", f"run.output_dir={out}", "run.name=z3", "training.max_steps=8"], env)
    killer.join(timeout=5)
    assert killer.killed is not None and killer.killed["step"] == 5, job.stdout[-3000:] + job.stderr[-3000:]
    assert job.returncode != 0  # the job failed with its driver
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "running" and status["job_submission_id"]  # nothing recorded the end: it was killed
    assert not (run / "export").exists()
    assert (run / "checkpoint_000004").is_dir()

    resumed = subprocess.run(
        [str(BIN / "xalign"), "train", "--resume", str(run), "--address", private_cluster.address],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "run z3: completed at step 8/8" in " ".join(resumed.stdout.split())
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9))  # steps 5+ re-done once, not logged twice
    assert sum(r["loss"] for r in rows[-2:]) < sum(r["loss"] for r in rows[:2]) - 0.2

    # ZeRO-3: each rank wrote its own partition of the weights and optimizer state, and its data position:
    # together the ranks trained 8 steps x 4 rows each, every row once.
    ckpt = run / "checkpoint_000008"
    names = {p.name for p in (ckpt / "deepspeed").iterdir()}
    keys = []
    for rank in (0, 1):
        assert f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in names
        assert f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in names
        keys.append(json.loads((ckpt / f"data_state_rank{rank:05d}.json").read_text())["position"]["keys"])
    assert [len(k) for k in keys] == [32, 32] and len(set(keys[0]) | set(keys[1])) == 64
    # Reassembling the partitions from the checkpoint gives exactly the exported model.
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    full = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="deepspeed")
    exported = load_file(run / "export" / "model" / "model.safetensors")
    for name, w in exported.items():
        torch.testing.assert_close(w, full[name], atol=0, rtol=0)
    model = AutoModelForCausalLM.from_pretrained(run / "export" / "model", dtype=torch.float32)
    assert model(torch.tensor([[1, 40, 41]])).logits.isfinite().all()
