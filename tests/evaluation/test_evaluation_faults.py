"""Evaluation faults with real processes on a private Ray cluster:

1. the vLLM engine actor is SIGKILLed mid-suite: Ray Data restarts it, retries its batch, the run goes on;
2. the driver is SIGKILLed with directions left: `--resume RUN_ID` keeps the finished directions and
   generates only the rest.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster.locations import REPO_ROOT

pytestmark = pytest.mark.slow

DIRECTIONS = ["en-de", "en-zh", "de-en", "zh-en"]
N = 10  # segments per direction; batch_size 2 leaves batches in flight when a direction finishes


def _argv(model: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "xalign.cli", "evaluate", "--suite", "flores200-quick", "--model", str(model),
            "--output", str(out), "--address", address, f"limit={N}", "languages=[de, zh]",
            "generation.batch_size=2", "generation.max_tokens=24", "engine.max_model_len=512"]


def _wait(pred, proc: subprocess.Popen, log: Path, what: str, timeout: float = 400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"evaluate exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _done(progress: Path) -> dict[str, list[dict]]:
    out = {}
    for key in DIRECTIONS:
        p = progress / f"{key}.jsonl"
        if p.is_file():
            out[key] = [json.loads(line) for line in p.read_text().splitlines()]
    return out


def test_engine_actor_killed_then_driver_killed_then_resume(private_cluster, chatty_model, tmp_path):
    env = {**os.environ, **private_cluster.env()}
    out, log = tmp_path / "reports", tmp_path / "driver.log"
    run = out / "faults"
    progress = run / "progress"
    with log.open("w") as fh:
        driver = subprocess.Popen([*_argv(chatty_model, out, private_cluster.address), "run_id=faults"], env=env,
                                  cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # 1. The first direction is back: kill the engine actor that produced it, by PID.
        first = _wait(lambda: _done(progress), driver, log, "the first finished direction")
        pids = {r["worker_pid"] for rows in first.values() for r in rows}
        assert len(pids) == 1
        actor_pid = pids.pop()
        assert "VLLMTranslator" in " ".join(psutil.Process(actor_pid).cmdline())  # the engine actor, nothing else
        os.kill(actor_pid, signal.SIGKILL)
        # 2. A direction finished by the restarted actor: now kill the driver itself, directions still left.
        after = _wait(lambda: {k: v for k, v in _done(progress).items() if v[-1]["worker_pid"] != actor_pid},
                      driver, log, "a direction from the restarted engine actor")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
    kept = _done(progress)
    assert not (run / "scores.json").exists(), "the run finished before the driver was killed; nothing to resume"
    assert after and len(kept) < len(DIRECTIONS), kept.keys()
    for rows in kept.values():  # every checkpoint is complete: no segment lost or doubled by the restart
        assert len(rows) == N and len({r["id"] for r in rows}) == N
    assert not psutil.pid_exists(actor_pid) or psutil.Process(actor_pid).status() == psutil.STATUS_ZOMBIE

    # 3. Resume: only the unfinished directions are generated; the finished ones are kept as they were.
    resumed = subprocess.run([*_argv(chatty_model, out, private_cluster.address), "--resume", "faults"], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert sorted(info["resumed_directions"]) == sorted(kept)
    assert sorted(info["generated_directions"]) == sorted(set(DIRECTIONS) - set(kept))
    doc = json.loads((run / "scores.json").read_text())
    assert {r["direction"]: r["segments"] for r in doc["rows"]} == dict.fromkeys(DIRECTIONS, N)
    system = doc["rows"][0]["system"]
    for key, rows in kept.items():
        hyps = (run / "hyps" / system / f"{key}.txt").read_text().splitlines()
        assert hyps == [r["hypothesis"] for r in sorted(rows, key=lambda r: r["idx"])]
    # A second --resume of a finished run generates nothing and rescores the same numbers.
    again = subprocess.run([*_argv(chatty_model, out, private_cluster.address), "--resume", "faults"], env=env,
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["generated_directions"] == []
    assert json.loads((run / "scores.json").read_text())["rows"] == doc["rows"]
