"""The per-rank training loop, independent of how it was launched.

Ray Train workers (`pipelines.train.worker`) and the bare `torchrun` baseline of the overhead
benchmark run this same code; only the batch source and the hooks differ.

Loss normalization: an SFT step's loss is the mean over every response token of the global batch
(all micro-batches of all ranks), whatever the packing put in each micro-batch; DeepSpeed's 1/GA
loss scaling and gradient averaging over ranks are undone by the scale factor. A DPO step averages
over pairs, which every micro-batch has equally many of; a GRPO step over completions (every micro-batch of
prompts has group_size completions per prompt).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cluster.config import RecipeError
from pipelines.train import ds_config as dsc
from pipelines.train.checkpointing import TrainState, verify_replay
from pipelines.train.collate import MicroBatch, collate_dpo, collate_sft
from pipelines.train.dpo import chosen_token_counts, dpo_loss, reference_logps, sequence_logps
from pipelines.train.metrics import mfu, train_flops_per_token
from pipelines.train.model import build_policy, build_reference, count_params
from pipelines.train.recipe import TrainRecipe
from pipelines.train.sft import sft_loss_sum


@dataclass(frozen=True)
class Plan:
    """Fixed before training starts, from the row count: the LR schedule depends on total_steps."""

    total_steps: int
    steps_per_epoch: int
    rows_per_rank: int  # each rank's share of an epoch (Ray Data's equal split)
    dropped_rows_per_epoch: int  # the epoch's tail that does not fill a global batch

    @classmethod
    def for_rows(cls, recipe: TrainRecipe, num_rows: int) -> Plan:
        rows_per_rank = num_rows // recipe.scaling.num_workers
        per_step = recipe.batch.micro_batch_size * recipe.grad_accum
        steps_per_epoch = rows_per_rank // per_step
        if steps_per_epoch == 0:
            raise RecipeError(
                f"batch.global_batch_size: the dataset has {num_rows} rows; one optimizer step needs "
                f"batch.global_batch_size = "
                f"{recipe.batch.global_batch_size} rows: lower the batch size or add data"
            )
        total = steps_per_epoch * recipe.training.epochs
        if recipe.training.max_steps is not None:
            total = min(total, recipe.training.max_steps)
        dropped = num_rows - steps_per_epoch * per_step * recipe.scaling.num_workers
        return cls(total, steps_per_epoch, rows_per_rank, dropped)


@dataclass
class StepStats:
    loss: float
    grad_norm: float | None
    lr: float
    tokens: int  # real tokens in the global batch
    rows: int  # global rows (SFT rows / DPO pairs)
    seconds: float
    reward_margin: float | None = None
    reward_accuracy: float | None = None
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    peak_rss_mb: float | None = None  # the largest peak resident memory over the workers
    extra: dict[str, float] | None = None  # method-specific metrics (GRPO: rewards, KL, rollout and sync times)


def _all_reduce(values: list[float], op=None) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def _all_sum(values: list[float]) -> list[float]:
    return _all_reduce(values)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PolicyTrainer:
    """One rank's DeepSpeed engine for the recipe's method, and the optimizer step over GA micro-batches."""

    def __init__(self, recipe: TrainRecipe, model_dir: Path, plan: Plan, world_size: int):
        import deepspeed

        self.recipe, self.plan, self.world_size = recipe, plan, world_size
        self.model_dir = Path(model_dir)
        self.ds_config = dsc.deepspeed_config(recipe, plan.total_steps)
        # Adopts the process group the launcher made (Ray Train's TorchConfig, or torchrun's env://);
        # ZeRO-3's partitioned model creation below needs DeepSpeed's view of the world size.
        deepspeed.init_distributed(dist_backend="nccl" if recipe.scaling.use_gpu else "gloo")
        torch.manual_seed(recipe.training.seed)  # identical initial LoRA weights on every rank and run
        policy = build_policy(recipe, self.model_dir, self.ds_config)
        self.n_params, self.n_trainable = count_params(policy)
        cfg = policy.config
        self.n_layers = getattr(cfg, "num_hidden_layers", 0) or 0
        self.hidden = getattr(cfg, "hidden_size", 0) or 0
        self.reference = build_reference(recipe, self.model_dir, self.ds_config)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = None
        if not dsc.use_deepspeed_optimizer(recipe):
            o = recipe.optimizer
            optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.engine, *_ = deepspeed.initialize(
            model=policy, optimizer=optimizer, model_parameters=params, config=self.ds_config,
        )
        self.zero_stage = self.ds_config["zero_optimization"]["stage"]
        sched = self.engine.lr_scheduler
        if sched is not None and getattr(sched, "last_batch_iteration", 0) < 0:
            # WarmupCosineLR starts "not started" (lr 0 for step 1). Start it at iteration 1 of a warmup
            # (step 1 trains at lr/warmup, the last step at the cosine floor) or 0 without one (full lr).
            sched.step(1 if dsc.warmup_steps(recipe, plan.total_steps) > 0 else 0)
        tok_pad = getattr(cfg, "pad_token_id", None)
        self.pad_id = int(tok_pad if tok_pad is not None else (getattr(cfg, "eos_token_id", 0) or 0))
        self.rollouts: Any = None  # GRPO: a pipelines.train.grpo_step.GrpoStep, set by the worker

    def collate(self, batch: dict[str, np.ndarray]) -> MicroBatch | PromptBatch:
        if self.recipe.method == "grpo":
            return PromptBatch.from_rows(batch)
        fn = collate_dpo if self.recipe.method == "dpo" else collate_sft
        return fn(batch, self.pad_id, self.recipe.batch.max_seq_len).to(self.engine.device)

    def step(self, mbs: list[MicroBatch], started: float) -> StepStats:
        """Forward/backward over this rank's GA micro-batches, then DeepSpeed's optimizer step."""
        stats = self._step(mbs, started)
        stats.peak_rss_mb = _all_reduce([peak_rss_mb()], dist.ReduceOp.MAX)[0]
        return stats

    def _step(self, mbs: list[Any], started: float) -> StepStats:
        if self.recipe.method == "grpo":
            assert self.rollouts is not None, "method grpo needs a rollout engine (PolicyTrainer.rollouts)"
            return self.rollouts.step(self, mbs, started)
        engine, ga = self.engine, self.recipe.grad_accum
        lr = float(engine.get_lr()[0])  # the rate this step uses (the scheduler advances inside step())
        local_tokens = sum(mb.tokens for mb in mbs)
        if self.recipe.method == "sft":
            global_loss_tokens = _all_sum([sum(mb.loss_tokens for mb in mbs)])[0]
            scale = self.world_size * ga / max(global_loss_tokens, 1.0)
            loss_sum = 0.0
            for mb in mbs:
                loss = sft_loss_sum(engine, mb)
                engine.backward(loss * scale)
                engine.step()
                loss_sum += float(loss.detach())
            total_loss, tokens, rows = _all_sum([loss_sum, local_tokens, sum(mb.rows for mb in mbs)])
            return StepStats(total_loss / max(global_loss_tokens, 1.0), self._grad_norm(), lr, int(tokens),
                             int(rows), time.perf_counter() - started)
        beta = self.recipe.dpo.beta
        sums = np.zeros(6)  # loss*pairs, pairs, margin, correct, chosen, rejected
        for mb in mbs:
            ref = reference_logps(self.reference, engine.module, mb)
            out = dpo_loss(sequence_logps(engine, mb), ref, mb.pairs, beta, self.recipe.dpo.sft_weight,
                           chosen_token_counts(mb))
            engine.backward(out.loss)
            engine.step()
            margin = out.chosen_rewards - out.rejected_rewards
            sums += [float(out.loss.detach()) * mb.pairs, mb.pairs, float(margin.sum()),
                     float((margin > 0).sum()), float(out.chosen_rewards.sum()), float(out.rejected_rewards.sum())]
        loss_x, pairs, margin, correct, chosen, rejected, tokens = _all_sum([*sums.tolist(), local_tokens])
        return StepStats(
            loss_x / pairs, self._grad_norm(), lr, int(tokens), int(pairs), time.perf_counter() - started,
            reward_margin=margin / pairs, reward_accuracy=correct / pairs, chosen_reward=chosen / pairs,
            rejected_reward=rejected / pairs,
        )

    def _grad_norm(self) -> float | None:
        g = self.engine.get_global_grad_norm()
        return None if g is None else float(g)

    def flops_per_token(self, tokens: int, rows: int) -> float:
        seqs = rows * {"dpo": 2, "grpo": self.recipe.grpo.group_size}.get(self.recipe.method, 1)
        reference = self.recipe.method == "dpo" or (self.recipe.method == "grpo" and self.recipe.grpo.kl_beta > 0)
        return train_flops_per_token(
            self.n_params, self.n_layers, self.hidden, tokens / max(seqs, 1), lora=self.recipe.lora is not None,
            reference_forward=reference,
        )


@dataclass
class PromptBatch:
    """GRPO: a micro-batch of RL prompts (the `rl` split), before rollouts turn it into sequences."""

    prompt_ids: list[list[int]]
    references: list[str]
    sources: list[str]
    src_langs: list[str]
    tgt_langs: list[str]
    keys: list[str]
    rows: int

    @classmethod
    def from_rows(cls, batch: dict[str, np.ndarray]) -> PromptBatch:
        keys = [str(x) for x in batch["sample_id"]]
        return cls([[int(t) for t in p] for p in batch["prompt_ids"]], [str(x) for x in batch["reference"]],
                   [str(x) for x in batch["source_text"]], [str(x) for x in batch["src_lang"]],
                   [str(x) for x in batch["tgt_lang"]], keys, len(keys))


BatchSource = Callable[[int], Iterator[dict[str, np.ndarray]]]  # epoch -> this rank's micro-batches, in order
StepHook = Callable[[TrainState, StepStats], bool]  # after each step; True stops the loop


def metrics_row(
    trainer: PolicyTrainer, state: TrainState, stats: StepStats, peak_flops: float | None
) -> dict[str, Any]:
    tps = stats.tokens / stats.seconds if stats.seconds > 0 else 0.0
    plan = trainer.plan
    epoch_rows = plan.steps_per_epoch * trainer.recipe.batch.micro_batch_size * trainer.recipe.grad_accum
    row: dict[str, Any] = {
        "step": state.step, "loss": stats.loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
        "tokens_per_s": tps, "tokens_per_s_per_worker": tps / trainer.world_size,
        "mfu": mfu(trainer.flops_per_token(stats.tokens, stats.rows), tps, peak_flops, trainer.world_size),
        "step_time_s": stats.seconds, "tokens": stats.tokens, "peak_rss_mb": stats.peak_rss_mb,
        "epoch": state.position.epoch + state.position.rows_in_epoch / max(epoch_rows, 1),
        "rows_in_epoch": state.position.rows_in_epoch, "samples_seen": state.samples_seen,
        "tokens_seen": state.tokens_seen,
    }
    if trainer.recipe.method == "dpo":
        row.update(reward_margin=stats.reward_margin, reward_accuracy=stats.reward_accuracy,
                   chosen_reward=stats.chosen_reward, rejected_reward=stats.rejected_reward)
    if stats.extra:
        row.update(stats.extra)
    return row


def train(trainer: PolicyTrainer, source: BatchSource, state: TrainState, after_step: StepHook) -> TrainState:
    """Run until plan.total_steps (or a hook says stop), resuming at `state`'s data position."""
    recipe, plan = trainer.recipe, trainer.plan
    ga, micro = recipe.grad_accum, recipe.batch.micro_batch_size
    while state.step < plan.total_steps:
        pos = state.position
        batches = source(pos.epoch)
        if pos.rows_in_epoch:  # resuming mid-epoch: replay the trained rows without training on them
            replayed: list[str] = []
            while len(replayed) < pos.rows_in_epoch:
                replayed += trainer.collate(next(batches)).keys
            verify_replay(pos, replayed)
        steps_done = pos.rows_in_epoch // (micro * ga)
        stop = False
        for _ in range(plan.steps_per_epoch - steps_done):
            started = time.perf_counter()
            mbs = [trainer.collate(next(batches)) for _ in range(ga)]
            stats = trainer.step(mbs, started)
            state.step += 1
            state.samples_seen += stats.rows
            state.tokens_seen += stats.tokens
            state.position.consume([k for mb in mbs for k in mb.keys])
            if after_step(state, stats) or state.step >= plan.total_steps:
                stop = True
                break
        if stop:
            break
        for _ in batches:  # the tail that does not fill a step (Plan.dropped_rows_per_epoch)
            pass
        state.position.next_epoch()
    return state
