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
    followup_settings,
    prepare_recipe,
    serve_recipe,
    train_recipe,
    train_systems,
)

BIN = Path(sys.executable).parent


def test_profiles_are_valid_recipes():
    for profile, name in PROFILES.items():
        recipe = load_recipe(DemoRecipe, name)
        assert recipe.name == name and recipe.evaluate.directions, profile
    full = load_recipe(DemoRecipe, "demo-full")  # the docs/RESULTS.md experiment: the seeds' methods side by side
    assert [s.name for s in full.systems] == ["bayling2", "xllama", "xllms100", "enzh-only"]
    assert [s.name for s in full.systems if s.dpo] == ["xllms100"] and full.evaluate.few_shot_base
    assert full.evaluate.limit >= 50 and len(full.evaluate.directions) == 18


def test_followup_stage_settings(tmp_path):
    from evaluation.followups import FollowupSettings

    full = load_recipe(DemoRecipe, "demo-full")
    assert full.followups is not None
    got = followup_settings(full.followups, "some/model", "bayling2", tmp_path)
    assert isinstance(got, FollowupSettings) and got.engine.model == "some/model"
    assert got.languages == ["deu_Latn", "fra_Latn", "swh_Latn", "zho_Hans"] and got.limit == full.followups.limit
    assert got.output_dir == str(tmp_path / "followups") and got.run_id == "bayling2"
    bad = full.followups.model_copy(update={"languages": ["de", "xx"]})
    with pytest.raises(RecipeError, match="languages"):
        followup_settings(bad, "some/model", "bayling2", tmp_path)


def test_system_names_must_be_unique():
    with pytest.raises(RecipeError, match="base-fewshot"):
        load_recipe(DemoRecipe, "demo-quick", ["systems=[{name: base-fewshot, prepare: {recipe: bayling2-mini}}]"])
    with pytest.raises(RecipeError, match="a-dpo"):
        load_recipe(DemoRecipe, "demo-quick", [
            "systems=[{name: a, prepare: {recipe: bayling2-mini}, dpo: {recipe: train-dpo-gemma-mini}}, "
            "{name: a-dpo, prepare: {recipe: bayling2-mini}}]"])


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
    for system in r.systems:
        assert prepare_recipe(system.prepare, out) == load_recipe(PrepareRecipe, system.prepare.recipe, [
            *system.prepare.overrides, f"output_dir={out / 'datasets'}"])
    name = r.systems[0].name
    data, run_dir = tmp_path / "ds", out / "runs" / name
    assert train_recipe(r.train, str(data), out, name) == load_recipe(TrainRecipe, r.train.recipe, [
        *r.train.overrides, f"data.path={data}", f"run.output_dir={out / 'runs'}", f"run.name={name}"])
    for system in (s for s in r.systems if s.dpo):  # DPO starts from the system's SFT export
        sft = out / "runs" / system.name / "export/model"
        assert train_recipe(system.dpo, str(data), out, f"{system.name}-dpo", str(sft)) == load_recipe(
            TrainRecipe, system.dpo.recipe, [*system.dpo.overrides, f"data.path={data}", f"model.base={sft}",
                                             f"run.output_dir={out / 'runs'}", f"run.name={system.name}-dpo"])
    served = serve_recipe(r.serve, str(run_dir / "export/model"), str(run_dir))
    assert served == load_recipe(ServeRecipe, r.serve.recipe, [
        *r.serve.overrides, f"engine.model={run_dir / 'export/model'}", f"served_model_name={name}-tuned"])
    ev = r.evaluate
    for label, few_shot in (("base", False), ("base-fewshot", True)):
        extra = ["generation.prompt=few_shot"] if few_shot else []
        assert eval_recipe(ev, "default", label, out, few_shot) == load_recipe(EvalRecipe, ev.recipe, [
            *ev.overrides, "engine.model=default", f"directions={json.dumps(ev.directions)}", f"limit={ev.limit}",
            f"output_dir={out / 'eval'}", f"run_id={label}", *extra])


def test_demo_settings_are_validated_with_the_recipe(tmp_path):
    """The demo's typed settings go through the recipe's validators again: a clash they cause names its key."""
    r = load_recipe(DemoRecipe, "demo-quick", ["serve.overrides=[adapters.bayling2-tuned=some/adapter]"])
    with pytest.raises(RecipeError, match=r"adapters\.bayling2-tuned: an adapter cannot share the base model's name"):
        serve_recipe(r.serve, str(tmp_path / "model"), str(tmp_path / "runs" / "bayling2"))


def test_sft_then_dpo_through_the_demo_stages(tiny_model, embedded_ray, tmp_path, monkeypatch):
    """xLLMs-100's two stages on the tiny model, by the code the full profile runs on Gemma: LoRA SFT, then LoRA DPO
    from the SFT export (the reference is that model: the adapters disabled), logging rewards; the DPO export
    loads and generates in vLLM."""
    tiny = [f"model={tiny_model}", "max_seq_len=128", "sources.ntrex.limit=60", "mixing.total=120",
            "sources.ntrex.languages=[eng_Latn, deu_Latn, zho_Hans]", "filters.dedup.near=false",
            "ray.progress=false"]
    recipe = load_recipe(DemoRecipe, "demo-quick", [
        f"train={{recipe: train-lora-tiny, overrides: [model.base={tiny_model}, training.max_steps=3]}}",
        f"systems=[{{name: xllms100, prepare: {{recipe: xllms100-mini, overrides: {json.dumps(tiny)}}}, "
        f"dpo: {{recipe: train-dpo-tiny, overrides: [\"lora={{r: 8, alpha: 16}}\", training.max_steps=3]}}}}]"])
    out = tmp_path / "demo"
    datasets, trained = train_systems(recipe, out, embedded_ray, StageStore(out))
    assert list(trained) == ["xllms100", "xllms100-dpo"]
    sft, dpo = trained["xllms100"].result, trained["xllms100-dpo"].result
    assert datasets["xllms100-dpo"].result.path == datasets["xllms100"].result.path
    assert dpo.lineage["base_model"] == sft.model and dpo.steps == 3
    assert dpo.lineage["parent"]["method"] == "sft" and dpo.lineage["parent"]["run_id"] == sft.lineage["run_id"]
    assert dpo.reward_margin is not None and 0.0 <= (dpo.reward_accuracy or 0.0) <= 1.0
    rows = [json.loads(line) for line in (Path(dpo.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert all({"reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward"} <= set(r) for r in rows)
    # A rerun reuses both stages; the DPO stage's key follows its SFT model.
    again = train_systems(recipe, out, embedded_ray, StageStore(out))[1]
    assert again["xllms100-dpo"].reused and again["xllms100-dpo"].key == trained["xllms100-dpo"].key

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from cluster import prompts
    from cluster.engine import EngineSettings, configure_process_env, engine_kwargs

    settings = EngineSettings(model=dpo.model, dtype="float32", max_model_len=256, max_num_seqs=2, kv_cache_gib=0.25)
    configure_process_env(settings)
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_kwargs(settings, dpo.model))
    try:
        out_text = llm.generate([prompts.translation_instruction("en", "de", "Hello")],
                                SamplingParams(temperature=0, max_tokens=4))
        assert len(out_text[0].outputs[0].token_ids) > 0
    finally:
        del llm


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
    assert set(lin["scores"]) == {"base", "bayling2"}

    # The served model answered every live request.
    assert len(summary["exchanges"]) >= len(recipe.serve.requests)
    for ex in summary["exchanges"]:
        text = ex["response"].get("translation") or ex["response"].get("text")
        assert isinstance(text, str) and text.strip()

    # The report has scores for every direction, for both systems.
    for system in ("base", "bayling2"):
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
