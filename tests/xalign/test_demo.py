"""The main job: `xalign demo --profile quick` end to end on the packaged Gemma model, then a rerun that reuses
every finished stage by its lineage key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from cluster.config import RecipeError, load_recipe
from xalign.demo import (
    PROFILES,
    DemoRecipe,
    StageStore,
    _key,
    eval_recipe,
    prepare_recipe,
    serve_recipe,
    train_recipe,
)

BIN = Path(sys.executable).parent


def test_profiles_are_valid_recipes():
    for profile, name in PROFILES.items():
        recipe = load_recipe(DemoRecipe, name)
        assert recipe.name == name and recipe.evaluate.directions, profile
    full = load_recipe(DemoRecipe, "demo-full")
    assert full.ablation is not None and full.evaluate.few_shot_base  # the docs/RESULTS.md experiment


class Value(BaseModel):
    value: int


def test_stage_store_reuses_by_key_and_reruns_on_change(tmp_path):
    store, calls = StageStore(tmp_path), []

    def stage(value: int):
        def go() -> Value:
            calls.append(value)
            return Value(value=value)
        return go

    first = store.run("s", _key("a", 1), Value, stage(1), lambda r: True)
    again = store.run("s", _key("a", 1), Value, stage(2), lambda r: True)
    changed = store.run("s", _key("a", 2), Value, stage(3), lambda r: True)
    stale = store.run("s", _key("a", 2), Value, stage(4), lambda r: False)  # the artifact is gone: run again
    assert calls == [1, 3, 4]
    assert not first.reused and again.reused and again.result.value == 1
    assert changed.result.value == 3 and stale.result.value == 4
    # The record on disk keeps its format, {key, result, seconds}: a rerun reuses what an earlier demo wrote.
    assert set(json.loads((tmp_path / "stages" / "s.json").read_text())) == {"key", "result", "seconds"}
    (tmp_path / "stages" / "t.json").write_text(json.dumps({"key": "k1", "result": {"value": 7}, "seconds": 3.5}))
    assert store.run("t", "k1", Value, stage(5), lambda r: True).result.value == 7 and calls == [1, 3, 4]
    (tmp_path / "stages" / "t.json").write_text(json.dumps({"key": "k1", "result": {"other": 1}, "seconds": 1}))
    assert store.run("t", "k1", Value, stage(6), lambda r: True).result.value == 6  # unreadable: run again


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_stage_recipes_are_the_spec_with_the_demo_settings(profile, tmp_path):
    """Each stage's typed recipe equals its spec's recipe with the demo's settings written as overrides, so lineage
    keys (hence reuse of finished stages, and the dataset id) depend only on the values, not on how they are set."""
    from evaluation.recipe import EvalRecipe
    from pipelines.data.recipe import PrepareRecipe
    from pipelines.train.recipe import TrainRecipe
    from serving.recipe import ServeRecipe

    r = load_recipe(DemoRecipe, PROFILES[profile])
    out = tmp_path / "demo"
    assert prepare_recipe(r.prepare, out) == load_recipe(PrepareRecipe, r.prepare.recipe, [
        *r.prepare.overrides, f"output_dir={out / 'datasets'}"])
    data, run_dir = tmp_path / "ds", out / "runs" / "xling"
    assert train_recipe(r.train, str(data), out, "xling") == load_recipe(TrainRecipe, r.train.recipe, [
        *r.train.overrides, f"data.path={data}", f"run.output_dir={out / 'runs'}", "run.name=xling"])
    served = serve_recipe(r.serve, str(run_dir / "export/model"), str(run_dir))
    assert served == load_recipe(ServeRecipe, r.serve.recipe, [
        *r.serve.overrides, f"engine.model={run_dir / 'export/model'}", "served_model_name=xling-tuned"])
    ev = r.evaluate
    for label, few_shot in (("base", False), ("base-fewshot", True)):
        extra = ["generation.prompt=few_shot"] if few_shot else []
        assert eval_recipe(ev, "default", label, out, few_shot) == load_recipe(EvalRecipe, ev.recipe, [
            *ev.overrides, "engine.model=default", f"directions={json.dumps(ev.directions)}", f"limit={ev.limit}",
            f"output_dir={out / 'eval'}", f"run_id={label}", *extra])


def test_demo_settings_are_validated_with_the_recipe(tmp_path):
    """The demo's typed settings go through the recipe's validators again: a clash they cause names its key."""
    r = load_recipe(DemoRecipe, "demo-quick", ["serve.overrides=[adapters.xling-tuned=some/adapter]"])
    with pytest.raises(RecipeError, match=r"adapters\.xling-tuned: an adapter cannot share the base model's name"):
        serve_recipe(r.serve, str(tmp_path / "model"), str(tmp_path / "runs" / "xling"))


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
