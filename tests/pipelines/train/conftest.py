"""Fixtures for the training tests: a real dataset folder from `xalign prepare` (the xLLMs-100 miniature,
with SFT shards and DPO pairs, tokenized for the tiny model) and one embedded Ray cluster per module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest


class HeldKiller(threading.Thread):
    """Waits for a run's fault-drill pause (`<run>/.holding`, XALIGN_TRAIN_HOLD_AFTER_STEP) and SIGKILLs a process:
    the held training worker (`pid_of=None`) or the one a callback names (e.g. the driver, from status.json)."""

    def __init__(self, run_dir: Path, pid_of=None, timeout_s: float = 900.0):
        super().__init__(daemon=True)
        self.run_dir, self.pid_of, self.timeout_s = run_dir, pid_of, timeout_s
        self.killed: dict | None = None

    def run(self) -> None:
        holding = self.run_dir / ".holding"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                held = json.loads(holding.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.2)
                continue
            pid = held["pid"] if self.pid_of is None else self.pid_of(self.run_dir)
            os.kill(pid, signal.SIGKILL)
            self.killed = {**held, "killed_pid": pid}
            return


@pytest.fixture(scope="session")
def train_dataset(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.config import load_recipe
    from pipelines.data.prepare import run_prepare
    from pipelines.data.recipe import PrepareRecipe

    recipe = load_recipe(PrepareRecipe, "xllms100-mini", [
        f"model={tiny_model}", "max_seq_len=128", f"output_dir={tmp_path_factory.mktemp('datasets')}",
        "sources.ntrex.languages=[eng_Latn, deu_Latn, fra_Latn, zho_Hans]", "sources.ntrex.limit=60",
        "mixing.total=300", "filters.dedup.near=false", "ray.progress=false",
    ])
    return run_prepare(recipe)


@pytest.fixture(scope="module")
def train_ray():
    """One embedded 2-CPU Ray cluster for all the training runs of a test module."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


@pytest.fixture
def held_killer():
    """Start a HeldKiller for a run folder (joined, so no thread outlives the test)."""
    started: list[HeldKiller] = []

    def start(run_dir: Path, pid_of=None) -> HeldKiller:
        k = HeldKiller(run_dir, pid_of)
        k.start()
        started.append(k)
        return k

    yield start
    for k in started:
        k.timeout_s = 0
        k.join(timeout=5)
