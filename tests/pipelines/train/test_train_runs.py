"""Real training runs on an embedded 2-CPU Ray cluster: Ray Train TorchTrainer, 2 workers with half a CPU
each, DeepSpeed on gloo, the tiny model, shards from `xalign prepare`. Runs are module fixtures shared by
the assertions; each trains a dozen steps (the cost is worker start-up, not steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cluster.config import load_recipe, recipe_hash
from pipelines.train.metrics import read_metrics
from pipelines.train.recipe import TrainRecipe
from pipelines.train.run import run_train

# Module fixtures train real runs: on a loaded 2-core machine the first setup alone can pass the default 900 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STEPS = 12


def make_recipe(name: str, tiny_model: Path, data: Path, out: Path, *extra: str) -> TrainRecipe:
    return load_recipe(TrainRecipe, name, [f"model.base={tiny_model}", f"data.path={data}", f"run.output_dir={out}",
                                           f"training.max_steps={STEPS}", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def sft_run(train_ray, train_dataset, tiny_model, runs) -> Path:
    """The uninterrupted reference: full SFT, ZeRO-2."""
    return run_train(make_recipe("train-sft-tiny-zero2", tiny_model, train_dataset, runs, "run.name=ref"), train_ray)


@pytest.fixture(scope="module")
def lora_run(train_ray, train_dataset, tiny_model, runs) -> Path:
    """LoRA SFT in bf16 with gradient checkpointing, its checkpoints on a pyarrow URI (file://) outside the run
    folder; exported in float32."""
    store = runs / "store"
    r = make_recipe("train-lora-tiny", tiny_model, train_dataset, runs, "run.name=lora",
                    f"checkpoint.storage=file://{store}", "model.dtype=bfloat16", "model.gradient_checkpointing=true")
    return run_train(r, train_ray)


@pytest.fixture(scope="module")
def lora_tokens_run(train_ray, train_dataset, tiny_model, runs) -> Path:
    """LoRA that also trains the chat markers' embedding rows (peft trainable tokens)."""
    r = make_recipe("train-lora-tiny", tiny_model, train_dataset, runs, "run.name=lora-tokens",
                    "training.max_steps=4", "checkpoint.every_steps=4",
                    "lora.trainable_tokens=[<start_of_turn>, <end_of_turn>]")
    return run_train(r, train_ray)


@pytest.fixture(scope="module")
def dpo_run(train_ray, train_dataset, tiny_model, runs) -> Path:
    """DPO with RPO's NLL term, as the Gemma demo profiles run it."""
    return run_train(make_recipe("train-dpo-tiny", tiny_model, train_dataset, runs, "run.name=dpo",
                                 "dpo.sft_weight=0.5"), train_ray)


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def data_keys(ckpt: Path) -> list[list[str]]:
    files = sorted(ckpt.glob("data_state_rank*.json"))
    return [json.loads(f.read_text())["position"]["keys"] for f in files]


def test_zero2_sft_learns_and_writes_the_run_folder(sft_run, train_dataset):
    rows = read_metrics(sft_run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_worker", "mfu", "epoch",
                "rows_in_epoch", "samples_seen"):
        assert key in rows[0], key
    assert rows[0]["mfu"] is None  # no known peak FLOPs on CPU
    assert rows[-1]["samples_seen"] == STEPS * 8 and rows[-1]["tokens_per_s"] > 0
    assert mean(r["loss"] for r in rows[-3:]) < mean(r["loss"] for r in rows[:3]) - 0.2
    lrs = [r["lr"] for r in rows]
    # Linear warmup, then cosine down to min_lr_ratio (10%) at the last step.
    assert lrs[0] < lrs[1] and max(lrs) <= 3e-3 and lrs[-1] == pytest.approx(3e-4)
    assert lrs[1:] == sorted(lrs[1:], reverse=True)
    assert list((sft_run / "tensorboard").glob("events.out.tfevents.*"))

    recipe = load_recipe(TrainRecipe, sft_run / "recipe.resolved.yaml")
    assert yaml.safe_load((sft_run / "recipe.resolved.yaml").read_text())["kind"] == "train"
    status = json.loads((sft_run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == STEPS
    lineage = json.loads((sft_run / "export" / "lineage.json").read_text())
    manifest = json.loads((train_dataset / "manifest.json").read_text())
    assert lineage["dataset_id"] == manifest["dataset_id"] and lineage["step"] == STEPS
    assert lineage["recipe_hash"] == recipe_hash(recipe) and lineage["run_id"] == "ref"
    assert lineage["base_model"] == recipe.model.base


def test_checkpoints_hold_every_rank_and_keep_n(sft_run):
    ckpts = sorted(p.name for p in sft_run.glob("checkpoint_0*"))
    assert ckpts == ["checkpoint_000008", "checkpoint_000012"]  # every 4 steps, keep 2
    last = sft_run / "checkpoint_000012"
    shards = sorted(p.name for p in (last / "deepspeed").iterdir())
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in shards
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt" in shards
    keys = data_keys(last)
    assert len(keys) == 2 and all(len(k) == STEPS * 4 for k in keys)  # 4 rows per rank and step
    assert not set(keys[0]) & set(keys[1])  # the ranks' shards are disjoint


def test_resume_continues_exactly(train_ray, train_dataset, tiny_model, runs, sft_run, monkeypatch, held_killer):
    """Stopped after step 5 and continued with --resume; then, after step 9, a training worker process is
    SIGKILLed and Ray Train (FailureConfig) restarts the group from the latest checkpoint (step 8): the same curve,
    weights and trained rows as the uninterrupted `ref`."""
    r = make_recipe("train-sft-tiny-zero2", tiny_model, train_dataset, runs, "run.name=resumed")
    run_dir = run_train(r, train_ray, stop_after_step=5)
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["step"]) == ("stopped", 5)
    assert not (run_dir / "export").exists()

    monkeypatch.setenv("XALIGN_TRAIN_HOLD_AFTER_STEP", "9")
    killer = held_killer(run_dir)
    assert run_train(None, train_ray, resume=run_dir) == run_dir
    killer.join(timeout=5)
    assert killer.killed is not None and killer.killed["step"] == 9  # a worker really died mid-run
    restarted = json.loads((run_dir / "workers" / "rank-00001.json").read_text())
    assert restarted["pid"] != killer.killed["killed_pid"]  # rank 1 runs in a new process
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"

    ref, got = read_metrics(sft_run), read_metrics(run_dir)
    assert [x["step"] for x in got] == list(range(1, STEPS + 1))  # each step once despite the replay
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7), a["step"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)
    wa = load_file(sft_run / "export" / "model" / "model.safetensors")
    wb = load_file(run_dir / "export" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    # The data position: every rank trained exactly the reference's rows, in order, none twice.
    ref_keys, got_keys = data_keys(sft_run / "checkpoint_000012"), data_keys(run_dir / "checkpoint_000012")
    assert got_keys == ref_keys and all(len(set(k)) == len(k) for k in got_keys)


def test_resume_of_a_live_run_name_is_refused(sft_run):
    from cluster.config import RecipeError

    r = load_recipe(TrainRecipe, sft_run / "recipe.resolved.yaml")
    with pytest.raises(RecipeError, match="already holds a run; pass --resume"):
        run_train(r)


def test_lora_sft_learns_and_checkpoints_to_the_uri(lora_run, runs):
    rows = read_metrics(lora_run)
    assert mean(r["loss"] for r in rows[-3:]) < mean(r["loss"] for r in rows[:3])
    store = runs / "store" / "lora"
    assert sorted(p.name for p in store.glob("checkpoint_0*")) == ["checkpoint_000008", "checkpoint_000012"]
    assert not list(lora_run.glob("checkpoint_0*"))
    adapter = lora_run / "export" / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((lora_run / "export" / "lineage.json").read_text())["lora"] is True


def test_lora_merged_export_equals_base_plus_adapter(lora_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, lora_run / "export" / "adapter")(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(lora_run / "export" / "model", dtype=torch.float32)(ids).logits
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=1e-4)
    assert (adapted - before).abs().max() > 1e-3  # the adapter changed the model


def test_lora_trainable_tokens_change_only_their_rows_in_the_merged_export(lora_tokens_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster import prompts

    tok = AutoTokenizer.from_pretrained(tiny_model)
    marked = [tok.convert_tokens_to_ids(t) for t in ("<start_of_turn>", prompts.END)]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(lora_tokens_run / "export" / "model", dtype=torch.float32)
    before, after = base.get_input_embeddings().weight, merged.get_input_embeddings().weight
    changed = ((after - before).abs().amax(-1) > 0).nonzero().flatten().tolist()
    assert changed == sorted(marked)
    # Tied weights stay tied: the output rows are the trained input rows.
    torch.testing.assert_close(merged.get_output_embeddings().weight, after)
    ids = torch.tensor([prompts.encode_prompt(tok, prompts.translation_messages("eng_Latn", "deu_Latn", "Hi."))])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(base, lora_tokens_run / "export" / "adapter")(ids).logits
        torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-4, rtol=1e-4)


def test_dpo_reward_margin_increases(dpo_run):
    rows = read_metrics(dpo_run)
    assert rows[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert rows[0]["loss"] > math.log(2) + 0.1  # DPO's ln 2 at the start, plus half the chosen answers' NLL
    assert mean(r["reward_margin"] for r in rows[-3:]) > mean(r["reward_margin"] for r in rows[:3]) + 0.05
    assert mean(r["reward_accuracy"] for r in rows[-3:]) > 0.5
    assert mean(r["loss"] for r in rows[-3:]) < rows[0]["loss"]
    assert (dpo_run / "export" / "model" / "model.safetensors").is_file()


# ---- The exports in transformers and vLLM -----------------------------------------------------------------


def _prompts(tok) -> list[list[int]]:
    from cluster import prompts

    texts = ["The weather is nice today.", "Where is the train station?", "I like to read books."]
    return [prompts.encode_prompt(tok, prompts.translation_messages("eng_Latn", "deu_Latn", t)) for t in texts]


def _hf_greedy(model_dir: Path, prompt_ids: list[list[int]], n: int) -> list[tuple[list[int], list[float]]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    for ids in prompt_ids:
        gen = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
        toks = gen.sequences[0][len(ids):].tolist()
        lps = [torch.log_softmax(lg[0].float(), -1)[t].item() for lg, t in zip(gen.logits, toks)]
        out.append((toks, lps))
    return out


def _vllm_greedy(model_dir: Path, prompt_ids, n: int, adapter: Path | None = None):
    from cluster.engine import EngineSettings, configure_process_env, engine_kwargs

    settings = EngineSettings(model=str(model_dir), dtype="float32", max_model_len=256, max_num_seqs=4,
                              kv_cache_gib=0.25, enable_lora=adapter is not None, max_lora_rank=8)
    configure_process_env(settings)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    llm = LLM(**engine_kwargs(settings, str(model_dir)))
    try:
        lora = LoRARequest("trained", 1, str(adapter)) if adapter else None
        res = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids],
                           SamplingParams(temperature=0, max_tokens=n, logprobs=1), lora_request=lora)
        return [(list(o.outputs[0].token_ids), [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs,
                                                                                   o.outputs[0].token_ids)])
                for o in res]
    finally:
        del llm


def _same_generation(a, b) -> None:
    for (ta, la), (tb, lb) in zip(a, b):
        assert ta == tb
        assert la == pytest.approx(lb, abs=2e-3)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_export_serves_identically_in_transformers_and_vllm(kind, tiny_model, monkeypatch, request):
    from transformers import AutoTokenizer

    from cluster import prompts

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    run = request.getfixturevalue("sft_run" if kind == "full" else "lora_run")
    model_dir = run / "export" / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template == prompts.CHAT_TEMPLATE
    gen_cfg = json.loads((model_dir / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids(prompts.END) in gen_cfg["eos_token_id"]
    ids = _prompts(tok)
    hf = _hf_greedy(model_dir, ids, 12)
    if kind == "full":
        _same_generation(hf, _vllm_greedy(model_dir, ids, 12))
    else:  # the adapter on the base in vLLM == the merged export in transformers
        _same_generation(hf, _vllm_greedy(tiny_model, ids, 12, adapter=run / "export" / "adapter"))
