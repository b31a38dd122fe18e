"""Pinned losses: an optimizer step's loss and gradient do not depend on how the global batch is split.

`pipelines.train.loop` promises that an SFT step's loss is the mean over every response token of the global
batch, and a DPO step's the mean over its pairs, whatever the micro-batch size, gradient accumulation and
number of workers. One global batch of fixed rows (4 packed SFT rows with 2, 15, 20 and 8 response tokens;
4 DPO pairs) is trained for one step by the real `PolicyTrainer` (DeepSpeed engine, torch AdamW) with the
(micro-batch, accumulation, workers) splits (4, 1, 1), (1, 4, 1), (2, 2, 1), (2, 1, 2) and (1, 2, 2); two
workers run as two processes joined in a gloo process group, as Ray Train joins them (the normalization is
the loop's all-reduce over that group). Every split must give the same loss, gradient norm and weights after
the step, equal to the direct computation of the same objective on the whole batch, and to pinned values.

The test recipe sets `optimizer.eps=1`: Adam's first update is then -lr * g / (|g| + eps), a strictly monotone
function of the gradient, so equal first-step weights mean equal gradients (with the default eps the update is
lr * sign(g) and would hide a wrongly scaled gradient). Clipping is off for the same reason.

The second half checks the loss itself: `pipelines.train.lm_head` (the LM head applied only at supervised
positions, in chunks, some recomputed in backward) gives the same SFT loss, DPO log-probs and gradients as the
model's full logits, on the tiny Llama, through PEFT (LoRA plus trainable rows of the tied head) and on a tiny
Gemma 3 with final logit softcapping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

IGNORE = -100
ROWS = 4  # the global batch: SFT rows or DPO pairs
LR = 1.0
SPLITS = [(4, 1, 1), (1, 4, 1), (2, 2, 1), (2, 1, 2), (1, 2, 2)]  # (micro-batch, accumulation, workers)
# name: (recipe, overrides). The tiny recipes' ZeRO-2 (and ZeRO-3), fp32; the DPO reference is the frozen copy
# (full) or the policy with its adapters disabled (LoRA).
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "sft-full": ("train-sft-tiny-zero2", []),
    "sft-full-zero3": ("train-sft-tiny-zero3", []),
    "sft-lora": ("train-lora-tiny", []),
    "dpo-full": ("train-dpo-tiny", []),
    "dpo-lora": ("train-dpo-tiny", ["lora={r: 8, alpha: 16}"]),
}
# Step 1 on the tiny model (cluster.tiny_model, seed 0): loss, DeepSpeed's global gradient norm, and two
# fingerprints of the weight update d = w1 - w0 over the trainable parameters: |d| and d . u for a fixed u.
# DPO's first loss is ln 2 for any split (policy == reference); its gradient is what the split could change.
# Pinned for the tiny model built from the shared NTREX text (its tokenizer, hence its weights, depend on it).
PINNED: dict[str, dict[str, float]] = {
    "sft-full": {"loss": 6.921819390190972, "grad_norm": 2.090930700302124, "update_norm": 2.02118061932498,
                 "update_proj": 0.4197496658634918},
    "sft-full-zero3": {"loss": 6.921819390190972, "grad_norm": 2.0909307833111774, "update_norm": 2.0211806257869713,
                       "update_proj": 0.41974969665534445},
    "sft-lora": {"loss": 6.921819390190972, "grad_norm": 0.5326090455055237, "update_norm": 0.5226181079178941,
                 "update_proj": 0.24341899181075632},
    "dpo-full": {"loss": 0.6931471824645996, "grad_norm": 5.589544296264648, "update_norm": 5.131188187112784,
                 "update_proj": 11.068465377800294},
    "dpo-lora": {"loss": 0.6931471824645996, "grad_norm": 1.4936305284500122, "update_norm": 1.41322245524704,
                 "update_proj": -2.168011100737374},
}


def _ids(seed: int, n: int) -> list[int]:
    """Deterministic token ids inside every tiny vocabulary (bytes are always in it)."""
    return [10 + (37 * seed + 11 * j + j * j) % 240 for j in range(n)]


def sft_rows() -> list[dict[str, Any]]:
    """4 packed rows of (prompt, response) samples: 2, 15, 20 and 8 supervised tokens, unequal lengths."""
    layout = [[(5, 2)], [(3, 9), (4, 6)], [(6, 20)], [(2, 1), (3, 4), (2, 3)]]
    rows, k = [], 0
    for samples in layout:
        ids, labels, pos, keys = [], [], [], []
        for prompt, response in samples:
            toks = _ids(k, prompt + response)
            ids += toks
            labels += [IGNORE] * prompt + toks[prompt:]
            pos += list(range(prompt + response))
            keys.append(f"s{k}")
            k += 1
        rows.append({"input_ids": ids, "labels": labels, "position_ids": pos, "sample_ids": keys})
    return rows


def dpo_rows() -> list[dict[str, Any]]:
    layout = [(4, 3, 5), (6, 8, 2), (3, 1, 4), (5, 6, 6)]  # (prompt, chosen, rejected) lengths
    return [{"sample_id": f"p{i}", "prompt_ids": _ids(100 + i, p), "chosen_ids": _ids(200 + i, c),
             "rejected_ids": _ids(300 + i, r)} for i, (p, c, r) in enumerate(layout)]


def as_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as Ray Data's numpy batches give them: list columns as object arrays of arrays."""
    out = {}
    for name in rows[0]:
        col = np.empty(len(rows), dtype=object)
        col[:] = [np.asarray(r[name]) if isinstance(r[name], list) else r[name] for r in rows]
        out[name] = col
    return out


def make_recipe(config: str, tiny_model: Path, micro: int, workers: int):
    from cluster.config import load_recipe
    from pipelines.train.recipe import TrainRecipe

    name, extra = CONFIGS[config]
    return load_recipe(TrainRecipe, name, [
        f"model.base={tiny_model}", f"batch.global_batch_size={ROWS}", f"batch.micro_batch_size={micro}",
        f"scaling.num_workers={workers}", "model.dtype=float32", "training.max_steps=1", "training.gradient_clipping=0",
        "schedule.warmup_steps=0", f"optimizer.lr={LR}", "optimizer.eps=1.0", "optimizer.weight_decay=0",
        "optimizer.impl=torch", *extra,
    ])


def direction(name: str, shape: torch.Size) -> torch.Tensor:
    """A fixed pseudo-random direction per parameter, for the update's fingerprint."""
    n = int(np.prod(shape))
    seed = sum(ord(c) for c in name)
    return torch.tensor([((seed + 7 * i) % 13) - 6 for i in range(n)], dtype=torch.float64).view(shape)


def fingerprint(deltas: dict[str, torch.Tensor]) -> tuple[float, float]:
    norm = sum(float(d.double().pow(2).sum()) for d in deltas.values()) ** 0.5
    proj = sum(float((d.double() * direction(k, d.shape)).sum()) for k, d in deltas.items())
    return norm, proj


# ---- one process per worker: the real PolicyTrainer for every (config, split) of one world size ---------------


def _trainable(trainer) -> dict[str, torch.Tensor]:
    import deepspeed

    params = [(n, p) for n, p in trainer.engine.module.named_parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=trainer.zero_stage == 3):
        return {n: p.detach().clone().float() for n, p in params}


def one_step(model_dir: Path, config: str, micro: int, ga: int, out: Path) -> None:
    """This rank's share of the global batch, one optimizer step; rank 0 writes the stats and the update."""
    from safetensors.torch import save_file

    from pipelines.train.checkpointing import TrainState
    from pipelines.train.loop import Plan, PolicyTrainer, train

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    recipe = make_recipe(config, model_dir, micro, world)
    assert recipe.grad_accum == ga
    rows = sft_rows() if recipe.method == "sft" else dpo_rows()
    trainer = PolicyTrainer(recipe, model_dir, Plan.for_rows(recipe, len(rows)), world)
    before = _trainable(trainer)
    mine = rows[rank * len(rows) // world:(rank + 1) * len(rows) // world]  # Ray Data's in-order equal split

    def source(epoch: int):
        return iter([as_batch(mine[i:i + micro]) for i in range(0, len(mine), micro)])

    stats = []
    train(trainer, source, TrainState(), lambda state, s: stats.append(s) or False)
    after = _trainable(trainer)
    if rank == 0:
        tag = f"{config}-{micro}-{ga}-{world}"
        save_file({k: after[k] - before[k] for k in before}, str(out / f"{tag}.safetensors"))
        s = stats[0]
        (out / f"{tag}.json").write_text(json.dumps({"loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr,
                                                     "rows": s.rows, "tokens": s.tokens}))


def worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(1)
    for config, micro, ga in job["cases"]:
        one_step(Path(job["model"]), config, micro, ga, Path(job["out"]))


def run_world(world: int, cases: list[tuple[str, int, int]], tiny_model: Path, out: Path) -> None:
    """`world` processes in one gloo group (env:// rendezvous, as torchrun or Ray Train's TorchConfig give)."""
    from cluster.local_cluster import free_port

    job = out / f"job-{world}.json"
    job.write_text(json.dumps({"cases": cases, "model": str(tiny_model), "out": str(out)}))
    port = free_port()
    procs, logs = [], [(out / f"world{world}-rank{rank}.log").open("w") for rank in range(world)]
    try:
        for rank in range(world):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                   "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                   "OMP_NUM_THREADS": "1"}
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(job)], env=env,
                                          stdout=logs[rank], stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=1200) for p in procs]
    finally:
        for p in procs:  # only the processes this test started
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    if any(codes):
        tails = "\n".join((out / f"world{world}-rank{r}.log").read_text()[-3000:] for r in range(world))
        raise AssertionError(f"world {world} workers exited with {codes}:\n{tails}")


@pytest.fixture(scope="module")
def stepped(tiny_model, tmp_path_factory) -> Path:
    """Every (config, split) trained for one step: one launch per world size."""
    out = tmp_path_factory.mktemp("loss-steps")
    for world in sorted({w for _, _, w in SPLITS}):
        cases = [(c, m, ga) for c in CONFIGS for m, ga, w in SPLITS if w == world]
        run_world(world, cases, tiny_model, out)
    return out


def result(out: Path, config: str, split: tuple[int, int, int]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    tag = f"{config}-{split[0]}-{split[1]}-{split[2]}"
    return json.loads((out / f"{tag}.json").read_text()), load_file(out / f"{tag}.safetensors")


# ---- the direct computation on the whole batch: full logits, no DeepSpeed, no process group ------------------


def plain_token_nll(model: torch.nn.Module, mb) -> torch.Tensor:
    """Per-token NLL [B, L-1] from the model's own full logits (the reference the training loss must equal)."""
    logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False).logits[:, :-1].float()
    target = mb.labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                          reduction="none")
    return nll.view(target.shape)


def plain_objective(recipe, model: torch.nn.Module, reference: torch.nn.Module | None) -> torch.Tensor:
    """The step's loss on the whole global batch at once: the SFT token mean, or the DPO mean over pairs."""
    from pipelines.train.collate import collate_dpo, collate_sft

    if recipe.method == "sft":
        mb = collate_sft(as_batch(sft_rows()), pad_id=0)
        return plain_token_nll(model, mb).sum() / mb.loss_tokens
    mb = collate_dpo(as_batch(dpo_rows()), pad_id=0)
    policy = -plain_token_nll(model, mb).sum(-1)
    with torch.no_grad():
        if reference is None:
            with model.disable_adapter():
                ref = -plain_token_nll(model, mb).sum(-1)
        else:
            ref = -plain_token_nll(reference, mb).sum(-1)
    n, beta = mb.pairs, recipe.dpo.beta
    margin = (policy[:n] - ref[:n]) - (policy[n:] - ref[n:])
    return -F.logsigmoid(beta * margin).mean()


def direct_step(config: str, tiny_model: Path) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, expected first AdamW update -lr * g / (|g| + eps)) from autograd on the whole batch."""
    from pipelines.train.model import build_policy, load_base

    recipe = make_recipe(config, tiny_model, ROWS, 1)
    torch.manual_seed(recipe.training.seed)  # as PolicyTrainer: the same LoRA initialization
    model = build_policy(recipe, tiny_model)
    reference = None
    if recipe.method == "dpo" and recipe.lora is None:  # full DPO: a frozen copy of the base
        reference = load_base(recipe, tiny_model).requires_grad_(False)
    loss = plain_objective(recipe, model, reference)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()))
    eps = recipe.optimizer.eps
    return loss.item(), {n: -LR * g / (g.abs() + eps) for n, g in zip(params, grads)}


# ---- the assertions --------------------------------------------------------------------------------------------


def test_rows_make_micro_batch_means_differ_from_the_token_mean():
    """The fixed rows are the hard case: a mean of per-micro-batch means would weight row 0's 2 tokens as much as
    row 2's 20, so only the global token count gives the same loss for every split."""
    from pipelines.train.collate import collate_sft

    counts = [collate_sft(as_batch([r]), pad_id=0).loss_tokens for r in sft_rows()]
    assert counts == [2, 15, 20, 8]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_step_is_the_same_for_every_split_and_pinned(config, stepped, tiny_model):
    want_loss, want_delta = direct_step(config, tiny_model)
    ref_stats, ref_delta = result(stepped, config, SPLITS[0])
    for split in SPLITS:
        stats, delta = result(stepped, config, split)
        assert stats["rows"] == ROWS and stats["lr"] == pytest.approx(LR)
        assert stats["loss"] == pytest.approx(want_loss, rel=1e-6), split
        assert stats["grad_norm"] == pytest.approx(ref_stats["grad_norm"], rel=1e-5), split
        assert delta.keys() == want_delta.keys()
        scale = max(float(d.abs().max()) for d in want_delta.values())
        for name, d in delta.items():
            # Weights near 0.02 after an update of ~|g|: fp32 rounding of w1 - w0 is ~1e-9 absolute.
            torch.testing.assert_close(d, want_delta[name], rtol=1e-4, atol=1e-6 * scale, msg=f"{split} {name}")
            torch.testing.assert_close(d, ref_delta[name], rtol=1e-4, atol=1e-6 * scale, msg=f"{split} {name}")
    norm, proj = fingerprint(ref_delta)
    got = {"loss": ref_stats["loss"], "grad_norm": ref_stats["grad_norm"], "update_norm": norm, "update_proj": proj}
    for key, value in PINNED[config].items():
        # The projection sums signed terms: its rounding is absolute (~1e-6), not relative.
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), f"{key}: got {got!r}"


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2])


# ---- the chunked LM head (pipelines.train.lm_head) equals the full logits ----------------------------------------


def tiny_gemma(cap: float | None) -> torch.nn.Module:
    """A 2-layer Gemma 3 text model (sliding-window and global layers, scaled embeddings) with logit softcapping."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
                           final_logit_softcapping=cap, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).float()


def head_model(kind: str, tiny_model: Path) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if kind == "gemma-softcap":
        return tiny_gemma(cap=0.5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    if kind == "llama":
        return model
    torch.manual_seed(0)  # LoRA on attention, plus trainable rows of the tied embedding/head (a wrapped head)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                     trainable_token_indices=[20, 37, 51])
    model = get_peft_model(model, cfg)
    for name, p in model.named_parameters():  # move LoRA B and the token rows off their no-op initialization
        if p.requires_grad:
            with torch.no_grad():
                p.add_(0.05 * direction(name, p.shape).float())
    return model


def grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    scale = max(float(g.abs().max()) for g in want.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6 * scale, msg=name)


KINDS = ["llama", "llama-lora-tokens", "gemma-softcap"]
# (chunk_tokens, retain_tokens): the defaults (one chunk, kept for backward), 7-token chunks all recomputed in
# backward, and a mix (the first 20 tokens' chunks kept, the rest recomputed).
BUDGETS = [(None, None), (7, 0), (7, 20)]


@pytest.mark.parametrize("budget", BUDGETS, ids=["default", "recomputed", "mixed"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_sft_loss_equals_full_logits(kind, budget, tiny_model):
    from pipelines.train.collate import collate_sft
    from pipelines.train.lm_head import response_nll

    model = head_model(kind, tiny_model)
    mb = collate_sft(as_batch(sft_rows()), pad_id=0)
    nll, rows = response_nll(model, mb, *budget)
    assert nll.shape == rows.shape == (mb.loss_tokens,)
    assert torch.bincount(rows, minlength=4).tolist() == [2, 15, 20, 8]
    want = plain_token_nll(model, mb).sum()
    got = nll.sum()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert_same_grads(grads(model, got), grads(model, want))


@pytest.mark.parametrize("budget", [(None, None), (5, 10)], ids=["default", "mixed"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_dpo_logps_equal_full_logits(kind, budget, tiny_model, monkeypatch):
    from pipelines.train import lm_head
    from pipelines.train.collate import collate_dpo
    from pipelines.train.dpo import dpo_loss, reference_logps, sequence_logps

    model = head_model(kind, tiny_model)
    if budget[0] is not None:  # sequence_logps uses the module's budgets: shrink them to this model's vocabulary
        vocab = model.config.vocab_size
        monkeypatch.setattr(lm_head, "CHUNK_LOGITS", budget[0] * vocab)
        monkeypatch.setattr(lm_head, "RETAIN_LOGITS", budget[1] * vocab)
    mb = collate_dpo(as_batch(dpo_rows()), pad_id=0)
    got = sequence_logps(model, mb)
    want = -plain_token_nll(model, mb).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    ref = want.detach() + torch.tensor([0.3, -0.2, 0.1, 0.4, -0.1, 0.2, -0.3, 0.0])  # a reference it differs from
    loss_got, loss_want = dpo_loss(got, ref, mb.pairs, 0.5).loss, dpo_loss(want, ref, mb.pairs, 0.5).loss
    assert loss_got.item() == pytest.approx(loss_want.item(), rel=1e-6)
    assert_same_grads(grads(model, loss_got), grads(model, loss_want))
    if kind == "llama-lora-tokens":  # the reference: the same head with the adapters (and token rows) disabled
        with torch.no_grad(), model.disable_adapter():
            base = -plain_token_nll(model, mb).sum(-1)
        torch.testing.assert_close(reference_logps(None, model, mb), base, rtol=1e-6, atol=1e-5)
        assert (base - want).abs().max() > 1e-3


def test_softcapping_is_applied(tiny_model):
    """The cap changes the loss of this model, so the equality above would catch it being skipped."""
    from pipelines.train.collate import collate_sft
    from pipelines.train.lm_head import response_nll

    model = tiny_gemma(cap=0.5)
    mb = collate_sft(as_batch(sft_rows()), pad_id=0)
    with torch.no_grad():
        capped = response_nll(model, mb)[0].sum()
        model.config.final_logit_softcapping = None
        uncapped = response_nll(model, mb)[0].sum()
        assert uncapped.item() == pytest.approx(plain_token_nll(model, mb).sum().item(), rel=1e-6)
    assert abs(capped.item() - uncapped.item()) > 1e-2


def test_other_logit_transforms_are_refused():
    from transformers import LlamaConfig

    from pipelines.train.lm_head import final_logit_softcap

    assert final_logit_softcap(LlamaConfig()) is None
    cfg = LlamaConfig()
    cfg.logits_scaling = 4.0  # Granite divides its logits: the chunked head would silently skip it
    with pytest.raises(NotImplementedError, match=r"logits_scaling=4\.0"):
        final_logit_softcap(cfg)


def test_a_batch_without_response_tokens_still_backpropagates(tiny_model):
    from pipelines.train.collate import collate_sft
    from pipelines.train.sft import sft_loss_sum

    model = head_model("llama", tiny_model)
    row = {"input_ids": _ids(1, 6), "labels": [IGNORE] * 6, "position_ids": list(range(6)), "sample_ids": ["s"]}
    loss = sft_loss_sum(model, collate_sft(as_batch([row]), pad_id=0))
    assert loss.item() == 0.0
    loss.backward()  # connected to the graph, with zero gradients
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
