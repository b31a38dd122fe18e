"""Fast checks of the training pieces without Ray: recipe rules, DeepSpeed config, collation of packed
rows, the losses, data contract errors, data-position bookkeeping and metrics files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cluster.config import RecipeError, load_recipe
from pipelines.train import checkpointing, ds_config, shards
from pipelines.train.collate import IGNORE, collate_dpo, collate_sft
from pipelines.train.dpo import chosen_token_counts, dpo_loss
from pipelines.train.loop import Plan
from pipelines.train.metrics import MetricsLogger, read_metrics, train_flops_per_token
from pipelines.train.recipe import TrainRecipe
from pipelines.train.run import _resume_recipe
from xalign.recipes import load_any

REPO = Path(__file__).resolve().parents[3]


def recipe(*overrides: str) -> TrainRecipe:
    return load_recipe(TrainRecipe, None, list(overrides))


def test_every_train_recipe_validates():
    names = sorted(p.stem for p in (REPO / "recipes").glob("train-*.yaml"))
    assert {"train-sft-tiny-zero2", "train-sft-tiny-zero3", "train-lora-tiny", "train-dpo-tiny",
            "train-lora-gemma-mini", "train-bayling2-full-gpu"} <= set(names)
    for name in names:
        assert isinstance(load_any(name), TrainRecipe)


def test_bayling2_setup_is_expressible():
    r = load_any("train-bayling2-full-gpu")
    cfg = ds_config.deepspeed_config(r, total_steps=1000)
    assert (r.scaling.num_workers, r.scaling.use_gpu, r.optimizer.lr) == (8, True, 2e-5)
    assert cfg["train_batch_size"] == 128 == cfg["train_micro_batch_size_per_gpu"] * cfg[
        "gradient_accumulation_steps"] * r.scaling.num_workers
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["bf16"]["enabled"]
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert cfg["optimizer"]["type"] == "AdamW"  # DeepSpeed's fused optimizer on GPU
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 30


def test_batch_must_divide_and_errors_name_keys():
    with pytest.raises(RecipeError, match=r"global_batch_size \(10\) must be a multiple"):
        recipe("batch.global_batch_size=10", "batch.micro_batch_size=2", "scaling.num_workers=2")
    with pytest.raises(RecipeError, match=r"deepspeed\.zero_stag: unknown key"):
        recipe("deepspeed.zero_stag=3")
    with pytest.raises(RecipeError, match="offload_params needs"):
        recipe("deepspeed.offload_params=true")
    with pytest.raises(RecipeError, match=r"trainable_tokens needs export\.merge_lora"):
        recipe("lora={r: 4}", "lora.trainable_tokens=[<end_of_turn>]", "export.merge_lora=false")


def test_trainable_tokens_must_be_single_tokens(tiny_model):
    from pipelines.train.model import trainable_token_ids

    assert len(set(trainable_token_ids(tiny_model, ["<start_of_turn>", "<end_of_turn>"]))) == 2
    with pytest.raises(ValueError, match=r"lora.trainable_tokens: '<end_of_turns>' is not a single token"):
        trainable_token_ids(tiny_model, ["<end_of_turns>"])


def test_cpu_config_uses_torch_adamw_and_overrides_merge():
    r = recipe("deepspeed.zero_stage=3", "deepspeed.offload_optimizer=true", "optimizer.impl=torch",
               "deepspeed.overrides={zero_optimization: {stage3_max_live_parameters: 1000}}")
    cfg = ds_config.deepspeed_config(r, total_steps=10)
    assert "optimizer" not in cfg and cfg["zero_allow_untested_optimizer"]
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["stage3_max_live_parameters"] == 1000
    assert cfg["zero_optimization"]["stage"] == 3  # an override merges into, not replaces, its section
    no_warmup = ds_config.deepspeed_config(recipe("schedule.warmup_steps=0"), total_steps=10)
    assert no_warmup["scheduler"]["params"]["warmup_min_ratio"] == 1.0


def test_plan_counts_steps_and_dropped_rows():
    r = recipe("batch.global_batch_size=8", "batch.micro_batch_size=2", "training.epochs=2")
    plan = Plan.for_rows(r, 101)  # 50 rows per rank, 4 rows per rank and step
    assert (plan.steps_per_epoch, plan.total_steps, plan.dropped_rows_per_epoch) == (12, 24, 101 - 96)
    assert Plan.for_rows(recipe("batch.global_batch_size=8", "batch.micro_batch_size=2",
                                "training.max_steps=5"), 101).total_steps == 5
    with pytest.raises(RecipeError, match="one optimizer step needs"):
        Plan.for_rows(r, 7)


def obj(xs: list) -> np.ndarray:
    """A column as Ray Data's numpy batches give list columns: an object array of arrays."""
    out = np.empty(len(xs), dtype=object)
    for i, x in enumerate(xs):
        out[i] = np.asarray(x)
    return out


def _sft_batch(rows):
    return {"input_ids": obj([r[0] for r in rows]), "labels": obj([r[1] for r in rows]),
            "position_ids": obj([r[2] for r in rows]), "sample_ids": obj([r[3] for r in rows])}


def test_collate_sft_pads_and_separates_packed_samples():
    rows = [([1, 5, 6, 1, 7], [-100, 5, 6, -100, 7], [0, 1, 2, 0, 1], ["a", "b"]),
            ([1, 8, 9], [-100, -100, 9], [0, 1, 2], ["c"])]
    mb = collate_sft(_sft_batch(rows), pad_id=0)
    assert mb.input_ids.tolist() == [[1, 5, 6, 1, 7], [1, 8, 9, 0, 0]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]  # padding is a segment of its own
    assert mb.labels[1, 3:].tolist() == [IGNORE, IGNORE]
    assert (mb.tokens, mb.rows, mb.keys) == (8, 2, ["a|b", "c"])
    assert mb.loss_tokens == 4  # 5 and 6, then 7; 9 — never a sample's first token
    with pytest.raises(ValueError, match=r"row c: 3 tokens exceed batch\.max_seq_len 2"):
        collate_sft(_sft_batch(rows[1:]), pad_id=0, max_seq_len=2)


def test_packed_rows_attend_only_within_their_sample(tiny_model):
    """Position ids alone keep packed samples apart (without a KV cache, as in training): a packed row's logits
    equal each sample's own."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    a, b = [1, 40, 41, 42, 43], [1, 50, 51, 52]
    rows = [(a + b, [-100] * 9, list(range(5)) + list(range(4)), ["a", "b"]), (a, [-100] * 5, list(range(5)), ["c"])]
    mb = collate_sft(_sft_batch(rows), pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False).logits
        alone_a = model(input_ids=torch.tensor([a])).logits[0]
        alone_b = model(input_ids=torch.tensor([b])).logits[0]
    torch.testing.assert_close(packed[0, :5], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[0, 5:], alone_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1, :5], alone_a, atol=1e-5, rtol=1e-5)  # right padding changes nothing


def test_collate_dpo_and_sigmoid_loss():
    batch = {"sample_id": np.array(["p1", "p2"]), "prompt_ids": obj([[1, 2], [1, 3, 4]]),
             "chosen_ids": obj([[7, 5], [8, 5]]), "rejected_ids": obj([[9, 9, 5], [6, 5]])}
    mb = collate_dpo(batch, pad_id=0)
    assert mb.pairs == 2 and mb.input_ids.shape == (4, 5)
    assert mb.labels[0].tolist() == [IGNORE, IGNORE, 7, 5, IGNORE]
    assert mb.labels[2].tolist() == [IGNORE, IGNORE, 9, 9, 5]
    out = dpo_loss(torch.tensor([-1.0, -2.0, -3.0, -1.0]), torch.tensor([-2.0, -2.0, -2.0, -2.0]), 2, beta=0.5)
    # pair 1: (1 - (-1)) = 2 -> -logsigmoid(1); pair 2: (0 - 1) = -1 -> -logsigmoid(-0.5)
    want = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert out.loss.item() == pytest.approx(want, rel=1e-6)
    assert out.chosen_rewards.tolist() == [0.5, 0.0] and out.rejected_rewards.tolist() == [-0.5, 0.5]
    # RPO: plus the weight times the chosen answers' mean per-token NLL (chosen answers of 2 tokens each here)
    counts = chosen_token_counts(mb)
    assert counts.tolist() == [2, 2]
    rpo = dpo_loss(torch.tensor([-1.0, -2.0, -3.0, -1.0]), torch.tensor([-2.0, -2.0, -2.0, -2.0]), 2, beta=0.5,
                   sft_weight=0.5, chosen_tokens=counts)
    assert rpo.loss.item() == pytest.approx(want + 0.5 * (1.0 / 2 + 2.0 / 2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        dpo_loss(torch.zeros(4), torch.zeros(4), 2, beta=0.5, sft_weight=1.0)


def _write_shard(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_dataset_contract_errors_name_file_and_column(tmp_path):
    with pytest.raises(shards.DatasetError, match=r"has no manifest\.json"):
        shards.open_dataset(tmp_path, "sft")
    (tmp_path / "manifest.json").write_text("{\n  \"dataset_id\": \n}")
    with pytest.raises(shards.DatasetError, match=r"manifest.json:3: not valid JSON"):
        shards.open_dataset(tmp_path, "sft")
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset_id": "abc", "recipe": {"max_seq_len": 64}}))
    with pytest.raises(shards.DatasetError, match=r"no part-\*\.parquet shards .*'dpo'"):
        shards.open_dataset(tmp_path, "dpo")
    ints = pa.array([[1, 2]], pa.list_(pa.int32()))
    _write_shard(tmp_path / "sft" / "part-00000.parquet",
                 pa.table({"input_ids": ints, "labels": ints, "position_ids": ints, "num_tokens": pa.array([2])}))
    with pytest.raises(shards.DatasetError, match=r"part-00000\.parquet: column 'sample_ids' is missing"):
        shards.open_dataset(tmp_path, "sft")
    _write_shard(tmp_path / "sft" / "part-00000.parquet",
                 pa.table({"input_ids": ints, "labels": ints, "position_ids": pa.array(["x"]),
                           "sample_ids": pa.array([["s"]]), "num_tokens": pa.array([2])}))
    with pytest.raises(shards.DatasetError, match=r"column 'position_ids' has type string, expected list<int32>"):
        shards.open_dataset(tmp_path, "sft")
    _write_shard(tmp_path / "sft" / "part-00000.parquet",
                 pa.table({"input_ids": ints, "labels": ints, "position_ids": ints,
                           "sample_ids": pa.array([["s"]]), "num_tokens": pa.array([2], pa.int32())}))
    info = shards.open_dataset(tmp_path, "sft")
    assert (info.dataset_id, info.num_rows, info.max_seq_len) == ("abc", 1, 64)


def test_dataset_from_another_tokenizer_is_refused(tiny_model, tmp_path):
    from cluster.tiny_model import build_tiny_model
    from cluster.tokenizer import tokenizer_identity

    ints = pa.array([[1, 2]], pa.list_(pa.int32()))
    _write_shard(tmp_path / "data" / "sft" / "part-00000.parquet",
                 pa.table({"input_ids": ints, "labels": ints, "position_ids": ints,
                           "sample_ids": pa.array([["s"]]), "num_tokens": pa.array([2], pa.int32())}))
    manifest = {"dataset_id": "abc", "tokenizer": tokenizer_identity(tiny_model)}
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    info = shards.open_dataset(tmp_path / "data", "sft")
    shards.check_tokenizer(info, tiny_model)  # the same tokenizer passes
    other = build_tiny_model(tmp_path / "other", vocab_size=600)
    with pytest.raises(shards.DatasetError, match=r"was tokenized with 'tiny-llama' .*prepare the data with"):
        shards.check_tokenizer(info, other)


def test_replay_check_names_the_first_differing_row():
    pos = checkpointing.DataPosition()
    pos.consume(["a", "b", "c"])
    checkpointing.verify_replay(pos, ["a", "b", "c"])
    with pytest.raises(checkpointing.ResumeError, match=r"row 1 of epoch 0 is 'x', the checkpoint trained 'b'"):
        checkpointing.verify_replay(pos, ["a", "x", "c"])
    state = checkpointing.TrainState(step=3, samples_seen=6, tokens_seen=99, position=pos)
    assert checkpointing.TrainState.from_json(state.to_json()) == state


def test_metrics_logger_keeps_each_step_once_after_restart(tmp_path):
    log = MetricsLogger(tmp_path)
    for step in range(1, 6):
        log.log({"step": step, "loss": 1.0 / step, "mfu": None, "nan": float("nan")})
    log.close()
    log = MetricsLogger(tmp_path, resume_step=3)  # a restart from the checkpoint at step 3
    log.log({"step": 4, "loss": 0.0})
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 0.0
    assert rows[0]["nan"] is None
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_flops_per_token():
    full = train_flops_per_token(1000, 2, 64, 100, lora=False)
    assert full == 6 * 1000 + 12 * 2 * 64 * 100
    assert train_flops_per_token(1000, 2, 64, 100, lora=True) < full


def test_resume_refuses_a_different_recipe(tmp_path):
    from cluster.config import save_resolved

    save_resolved(recipe("optimizer.lr=0.1"), tmp_path)
    assert _resume_recipe(tmp_path, None).optimizer.lr == 0.1
    with pytest.raises(RecipeError, match=r"differs from the run's \(optimizer\.lr\)"):
        _resume_recipe(tmp_path, recipe("optimizer.lr=0.2"))
    with pytest.raises(RecipeError, match="not an xalign training run folder"):
        _resume_recipe(tmp_path / "nope", None)


def test_cli_errors_before_any_run_folder(tmp_path, capsys):
    from xalign.cli import main

    def printed() -> str:
        return " ".join(capsys.readouterr().out.split())  # rich wraps long lines

    assert main(["train"]) == 2
    assert "--recipe is required" in printed()
    out = tmp_path / "runs"
    code = main(["train", "--recipe", "train-sft-tiny-zero2", f"data.path={tmp_path / 'missing'}",
                 f"run.output_dir={out}"])
    assert code == 2 and "has no manifest.json" in printed()
    assert not out.exists()
    assert main(["train", "--recipe", "train-sft-tiny-zero2", "batch.micro_batch_size=3"]) == 2
    assert "global_batch_size (8) must be a multiple" in printed()


def test_shard_deleted_or_changed_after_prepare_is_named(tmp_path, capsys):
    """Bad data (issue 10): the manifest's shard list is the truth; a deleted, added or altered shard is an error
    naming the file, before any run folder exists — never a silently smaller dataset."""
    from xalign.cli import main

    ints = pa.array([[1, 2], [3, 4]], pa.list_(pa.int32()))
    table = pa.table({"input_ids": ints, "labels": ints, "position_ids": ints,
                      "sample_ids": pa.array([["s1"], ["s2"]]), "num_tokens": pa.array([2, 2], pa.int32())})
    data = tmp_path / "data"
    for i in range(2):
        _write_shard(data / "sft" / f"part-{i:05d}.parquet", table)
    manifest = {"dataset_id": "abc", "shards": {"sft": [{"file": f"sft/part-{i:05d}.parquet", "rows": 2}
                                                        for i in range(2)], "dpo": []}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert shards.open_dataset(data, "sft").num_rows == 4
    with pytest.raises(shards.DatasetError, match=r"shards\.dpo is empty"):
        shards.open_dataset(data, "dpo")

    (data / "sft" / "part-00001.parquet").unlink()
    with pytest.raises(shards.DatasetError, match=r"sft/part-00001\.parquet: shard listed in manifest\.json "
                                                  r"\(shards\.sft\[1\]\) is missing"):
        shards.open_dataset(data, "sft")
    out = tmp_path / "runs"
    code = main(["train", "--recipe", "train-sft-tiny-zero2", f"data.path={data}", f"run.output_dir={out}"])
    printed = "".join(capsys.readouterr().out.split())  # rich wraps long paths anywhere
    assert code == 2 and "sft/part-00001.parquet:shardlistedinmanifest.json" in printed
    assert not out.exists()

    _write_shard(data / "sft" / "part-00001.parquet", table.slice(0, 1))
    with pytest.raises(shards.DatasetError, match=r"part-00001\.parquet: 1 rows, the manifest says 2"):
        shards.open_dataset(data, "sft")
    _write_shard(data / "sft" / "part-00001.parquet", table)
    _write_shard(data / "sft" / "part-00002.parquet", table)
    with pytest.raises(shards.DatasetError, match=r"part-00002\.parquet: shard not listed in manifest\.json"):
        shards.open_dataset(data, "sft")
    (data / "sft" / "part-00002.parquet").unlink()
    (data / "sft" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(shards.DatasetError, match=r"part-00000\.parquet: not a readable Parquet shard"):
        shards.open_dataset(data, "sft")


def test_rl_split_contract_names_file_and_column(tmp_path):
    """`method: grpo` reads the `rl` split: a dataset without one, a bad manifest entry and a missing or mistyped
    column are errors naming the file and the column."""
    data = tmp_path / "data"
    data.mkdir()
    manifest = {"dataset_id": "abc", "shards": {"sft": [], "dpo": []}}  # prepared without an rl builder
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shards.DatasetError, match=r"no part-\*\.parquet shards \(method needs the 'rl' split\)"):
        shards.open_rl_dataset(data)
    manifest["shards"]["rl"] = [{"rows": 1}]
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shards.DatasetError, match=r"manifest\.json: shards\.rl\[0\]\.file: required"):
        shards.open_rl_dataset(data)

    row = {"sample_id": pa.array(["rl/ntrex/000001/eng_Latn>deu_Latn"]), "prompt_ids": pa.array([[2, 4, 5]],
           pa.list_(pa.int32())), "reference": pa.array(["Guten Morgen!"]), "source_text": pa.array(["Good morning!"]),
           "src_lang": pa.array(["eng_Latn"]), "tgt_lang": pa.array(["deu_Latn"]),
           "num_tokens": pa.array([3], pa.int32()), "reference_tokens": pa.array([5], pa.int32())}
    manifest["shards"]["rl"] = [{"file": "rl/part-00000.parquet", "rows": 1}]
    (data / "manifest.json").write_text(json.dumps(manifest))
    _write_shard(data / "rl" / "part-00000.parquet", pa.table({k: v for k, v in row.items() if k != "reference"}))
    with pytest.raises(shards.DatasetError, match=r"rl/part-00000\.parquet: column 'reference' is missing"):
        shards.open_rl_dataset(data)
    _write_shard(data / "rl" / "part-00000.parquet", pa.table({**row, "prompt_ids": pa.array(["2 4 5"])}))
    with pytest.raises(shards.DatasetError, match=r"column 'prompt_ids' has type string, expected list<int32>"):
        shards.open_rl_dataset(data)
    _write_shard(data / "rl" / "part-00000.parquet", pa.table(row))
    info = shards.open_rl_dataset(data)
    assert (info.split, info.num_rows, info.dataset_id) == ("rl", 1, "abc")
    with pytest.raises(shards.DatasetError, match=r"shards\.sft is empty"):
        shards.open_dataset(data, "sft")
