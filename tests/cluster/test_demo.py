"""The main job: `xalign demo --profile quick` end to end on the packaged Gemma model, then a rerun that reuses
every finished stage by its lineage key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import load_recipe
from cluster.demo import PROFILES, DemoRecipe, StageStore, _key

BIN = Path(sys.executable).parent


def test_profiles_are_valid_recipes():
    for profile, name in PROFILES.items():
        recipe = load_recipe(DemoRecipe, name)
        assert recipe.name == name and recipe.evaluate.directions, profile
    full = load_recipe(DemoRecipe, "demo-full")
    assert full.ablation is not None and full.evaluate.few_shot_base  # the docs/RESULTS.md experiment


def test_stage_store_reuses_by_key_and_reruns_on_change(tmp_path):
    store, calls = StageStore(tmp_path), []

    def stage(value: int):
        def go() -> dict:
            calls.append(value)
            return {"value": value}
        return go

    first = store.run("s", _key("a", 1), stage(1), lambda r: True)
    again = store.run("s", _key("a", 1), stage(2), lambda r: True)
    changed = store.run("s", _key("a", 2), stage(3), lambda r: True)
    stale = store.run("s", _key("a", 2), stage(4), lambda r: False)  # the artifact is gone: run again
    assert calls == [1, 3, 4]
    assert not first["reused"] and again["reused"] and again["value"] == 1
    assert changed["value"] == 3 and stale["value"] == 4


def _run_demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "xalign"), "demo", "--profile", "quick", f"output_dir={out}"],
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the whole main job on 2 CPU cores: about 15 minutes, then the reusing rerun
def test_quick_demo_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    proc = _run_demo(out)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    recipe = load_recipe(DemoRecipe, "demo-quick")

    # Every stage produced its artifacts.
    lin = summary["lineage"]
    dataset = Path(lin["dataset"]["path"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert list(dataset.glob("sft/part-*.parquet"))
    export = Path(lin["checkpoint"]["export"])
    assert (export / "config.json").exists() and list(export.glob("*.safetensors"))
    assert (export.parent / "adapter" / "adapter_config.json").exists()
    assert summary["train"]["steps"] > 0 and summary["train"]["last_loss"] is not None

    # The lineage chain is complete: dataset -> checkpoint -> deployment -> scores.
    assert lin["checkpoint"]["dataset_id"] == manifest["dataset_id"] == lin["dataset"]["dataset_id"]
    assert lin["checkpoint"]["step"] == summary["train"]["steps"]
    assert lin["deployment"]["model"] == str(export)
    assert set(lin["scores"]) == {"base", "tuned"}

    # The served model answered every live request.
    assert len(summary["exchanges"]) >= len(recipe.serve.requests)
    for ex in summary["exchanges"]:
        text = ex["response"].get("translation") or ex["response"].get("text")
        assert isinstance(text, str) and text.strip()

    # The report has scores for every direction, for both systems.
    for system in ("base", "tuned"):
        rows = {r["direction"]: r["scores"] for r in summary["systems"][system]}
        assert set(rows) == {d.replace("->", "-") for d in recipe.evaluate.directions}  # keys like en-de
        for scores in rows.values():
            assert {"bleu", "chrf", "off_target"} <= set(scores)
    report = (out / "report.md").read_text()
    assert (out / "scores.png").stat().st_size > 0
    for d in recipe.evaluate.directions:
        assert f"| {d.replace('->', '-')} |" in report

    # Rerunning reuses every finished stage by its lineage key.
    proc = _run_demo(out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("reused") >= 5, proc.stdout[-4000:]
    assert json.loads((out / "summary.json").read_text())["systems"] == summary["systems"]
