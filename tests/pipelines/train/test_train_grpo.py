"""GRPO end to end on the tiny model: `xalign prepare` writes the RL split, `run_train` runs Ray Train workers with
DeepSpeed and a colocated vLLM rollout actor, and a learnable reward rises.

The learnable reward is the one the issue names, answering in the asked language. A random tiny model answers
in no language at all, so the test first teaches it (in-process LoRA, merged) to answer any prompt with a German
or a French sentence about equally often; GRPO with the language reward towards French must then move it to
French within a few steps. Everything else is real: the data pipeline, Ray Train, DeepSpeed, vLLM, the adapter
sync every step, the checkpoints, `--resume` and the export that vLLM loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FRENCH = "Le chat dort sur le canapé rouge près de la fenêtre."
GERMAN = "Der Hund schläft im Garten, weil es heute sehr warm ist."


@pytest.fixture(scope="module")
def rl_dataset(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.config import load_recipe
    from pipelines.data.prepare import run_prepare
    from pipelines.data.recipe import PrepareRecipe

    recipe = load_recipe(PrepareRecipe, "grpo-ntrex-mini", [
        f"model={tiny_model}", "max_seq_len=256", f"output_dir={tmp_path_factory.mktemp('rl-datasets')}",
        "sources.ntrex.languages=[eng_Latn, fra_Latn]", "builders.rl.directions=[en->fr]",
        "builders.rl.per_direction=24", "filters.dedup.near=false", "ray.progress=false",
    ])
    return run_prepare(recipe)


@pytest.fixture(scope="module")
def bilingual_model(tiny_model: Path, rl_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model taught (fully fine-tuned, in-process) to answer the RL prompts in German or in French."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster import prompts

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rows = pq.read_table(rl_dataset / "rl").to_pylist()[:8]
    answers = [tok.encode(a + prompts.END, add_special_tokens=False) for a in (GERMAN, FRENCH)]
    seqs = [(r["prompt_ids"], a) for r in rows for a in answers]  # every prompt with both answers: a mixture
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    length = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), length), tok.pad_token_id or 0)
    labels = torch.full((len(seqs), length), -100)
    for i, (p, a) in enumerate(seqs):
        ids[i, :len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
    model.train()
    for _ in range(100):  # to a loss of ~0.05: the answers are learnt, the first token stays a coin toss
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("bilingual-model")
    model.save_pretrained(out)
    for f in tiny_model.iterdir():  # tokenizer, chat template, generation config
        if not (out / f.name).exists() and f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    return out


def grpo_recipe(model: Path, data: Path, out: Path, *extra: str):
    from cluster.config import load_recipe
    from pipelines.train.recipe import TrainRecipe

    return load_recipe(TrainRecipe, "train-grpo-tiny", [
        f"model.base={model}", f"data.path={data}", f"run.output_dir={out}",
        "grpo.rewards.weights={chrf: 0.0, language: 1.0, repetition: 0.0, length: 0.0}", "grpo.group_size=8",
        "grpo.max_new_tokens=24", "grpo.kl_beta=0.01", "optimizer.lr=1e-2", "training.epochs=3", "training.max_steps=6",
        "checkpoint.every_steps=3", *extra])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_grpo_moves_the_answers_to_the_asked_language(train_ray, bilingual_model, rl_dataset, tmp_path):
    from pipelines.train.run import run_train

    run_dir = run_train(grpo_recipe(bilingual_model, rl_dataset, tmp_path / "runs"), address=train_ray)
    rows = metrics(run_dir)
    print("language reward by step:", [round(r["reward_language_mean"], 3) for r in rows])
    assert [r["step"] for r in rows] == list(range(1, 7))
    reward = [r["reward_language_mean"] for r in rows]
    off_target = [r["rollout_off_target"] for r in rows]
    assert 0.1 < reward[0] < 0.8, reward  # the taught mixture: some French, some German
    # Rollouts are sampled (32 per step), so single steps are noisy: compare the first step with the rest.
    later = sum(reward[1:]) / len(reward[1:])
    assert later > reward[0] + 0.15 and max(reward) >= 0.8, reward
    assert sum(off_target[1:]) / len(off_target[1:]) < off_target[0], off_target
    for r in rows:  # what every step reports
        for key in ("reward_mean", "reward_std", "reward_language_std", "kl", "clip_fraction", "rollout_tokens_per_s",
                    "learner_tokens_per_s", "rollout_s", "learner_s", "reward_s", "sync_s", "loss", "lr"):
            assert (r[key] is not None and r[key] >= 0) or key == "loss", (key, r)
    assert rows[0]["sync_s"] == 0 and all(r["sync_s"] > 0 for r in rows[1:])  # the base needs no sync
    # The adapter the engine sampled last, kept with the one before it; the export is the trained adapter.
    assert len(list((run_dir / "rollout-adapters").glob("step-*"))) == 2
    lineage = json.loads((run_dir / "export" / "lineage.json").read_text())
    assert lineage["method"] == "grpo" and lineage["base_model_path"] == str(bilingual_model)
    assert (run_dir / "export" / "adapter" / "adapter_config.json").is_file()


def test_grpo_resume_continues_from_the_checkpoint(train_ray, bilingual_model, rl_dataset, tmp_path):
    from pipelines.train.run import run_train

    recipe = grpo_recipe(bilingual_model, rl_dataset, tmp_path / "runs", "run.name=resumed")
    run_dir = run_train(recipe, address=train_ray, stop_after_step=3)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
    run_train(None, address=train_ray, resume=run_dir)
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 7))  # each step once, steps 4-6 after the restart
    assert rows[3]["sync_s"] > 0  # the restarted engine got the checkpoint's adapter before step 4's rollouts
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
