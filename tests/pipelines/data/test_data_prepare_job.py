"""`xalign prepare` submitted with `ray job submit --working-dir .` to a private cluster from `xalign cluster up`:
the job's driver runs in a copy of the checkout, finds the shared data through the cluster's environment and
writes the same dataset, byte for byte, as the embedded run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from cluster.config import validate
from pipelines.data.prepare import run_prepare
from pipelines.data.recipe import PrepareRecipe

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_prepare_under_ray_job_submit_matches_the_embedded_run(private_cluster, submit_job, data_ray, tiny_model,
                                                              small_recipe, tmp_path):
    embedded = run_prepare(validate(PrepareRecipe, small_recipe(str(tiny_model), str(tmp_path / "embedded"))),
                           address=data_ray)
    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe(str(tiny_model), str(tmp_path / "submitted"))))
    # Not the test session's XALIGN_DATA: the job must find the shared data through the cluster's environment.
    env = {k: v for k, v in os.environ.items() if k != "XALIGN_DATA"}
    env.update(private_cluster.env(), PATH=f"{BIN}:{os.environ['PATH']}")
    runtime_env = {"env_vars": {"PATH": env["PATH"], "XALIGN_NO_PROGRESS": "1"}}
    job = submit_job(
        [str(BIN / "ray"), "job", "submit", "--address", private_cluster.dashboard_url, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "xalign", "prepare", "--recipe", str(recipe)], env)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    submitted = next(p for p in (tmp_path / "submitted").iterdir() if p.name != "logs")  # logs/: the CLI's log
    assert submitted.name == embedded.name  # the dataset id
    assert parquet_bytes(submitted) == parquet_bytes(embedded)
    assert (submitted / "manifest.json").read_bytes() == (embedded / "manifest.json").read_bytes()
    run = json.loads((submitted / "run.json").read_text())
    assert run["engine"] == "ray-data" and run["address"] != data_ray  # it ran on the cluster it was submitted to
    assert "packing efficiency" in job.stdout  # the CLI's summary reached the job's log
