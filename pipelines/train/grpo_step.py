"""One GRPO optimizer step on one rank: rollouts, rewards, advantages, the clipped loss, and the weight sync.

Each rank sends its own prompts to the rollout engine (groups never straddle ranks, so advantages need no
communication), scores the completions with the recipe's rewards, and runs forward/backward over its
micro-batches of completions. After DeepSpeed's step, rank 0 saves the new LoRA adapter and has the engine load
it; every rank waits at a barrier, so the next rollouts sample from the updated policy.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cluster import langid
from pipelines.train.grpo import collate_rollouts, group_advantages, grpo_loss, token_logps
from pipelines.train.loop import PolicyTrainer, PromptBatch, StepStats, _all_sum
from pipelines.train.rewards.base import Rollout
from pipelines.train.rewards.registry import score

KEEP_ADAPTERS = 2  # synced adapter folders kept on disk (the engine's current one and the one before)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class GrpoStep:
    def __init__(self, engine: Any, adapters_dir: Path, rank: int, step: int) -> None:
        self.engine, self.adapters_dir, self.rank = engine, Path(adapters_dir), rank
        self.step_index = step  # optimizer steps done (a resumed run starts at its checkpoint's step)
        self.adapter: tuple[str, int, str] | None = None  # what the engine samples from; None = the base
        self.synced = 0 if step == 0 else -1  # step whose weights the engine holds (a fresh adapter is the base)

    # ---- weight sync ---------------------------------------------------------------------------------

    def sync(self, trainer: PolicyTrainer) -> float:
        """Rank 0 saves the adapter and the engine loads it; returns the seconds this took (0 on other ranks)."""
        import ray

        started = time.perf_counter()
        name = f"step-{self.step_index:06d}"
        folder = self.adapters_dir / name
        if self.rank == 0:
            trainer.engine.module.save_pretrained(str(folder))
            ray.get(self.engine.load_adapter.remote(name, self.step_index + 1, str(folder)))
            for old in sorted(self.adapters_dir.glob("step-*"))[:-KEEP_ADAPTERS]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        self.adapter, self.synced = (name, self.step_index + 1, str(folder)), self.step_index
        return time.perf_counter() - started if self.rank == 0 else 0.0

    # ---- the step ------------------------------------------------------------------------------------

    def step(self, trainer: PolicyTrainer, batches: list[PromptBatch], started: float) -> StepStats:
        import ray

        g = trainer.recipe.grpo
        sync_s = self.sync(trainer) if self.synced != self.step_index else 0.0
        prompts = [p for b in batches for p in b.prompt_ids]
        result = ray.get(self.engine.generate.remote(prompts, g.group_size, g.max_new_tokens, g.temperature, g.top_p,
                                                     self.adapter))
        reward_started = time.perf_counter()
        rollouts: list[Rollout] = []
        for b_index, b in enumerate(batches):
            offset = sum(len(x.prompt_ids) for x in batches[:b_index])
            for i in range(b.rows):
                for sample in result.groups[offset + i]:
                    rollouts.append(Rollout(completion=sample.text, reference=b.references[i], source=b.sources[i],
                                            src_lang=b.src_langs[i], tgt_lang=b.tgt_langs[i],
                                            finish_reason=sample.finish_reason,
                                            completion_tokens=len(sample.token_ids)))
        total, components = score(rollouts, g.rewards)
        # The off-target rate as evaluation counts it (identified as another language), whatever the weights.
        off = [1.0 if langid.is_on_target(r.completion, r.tgt_lang) is False else 0.0 for r in rollouts]
        reward_s = time.perf_counter() - reward_started

        learn_started = time.perf_counter()
        rewards = torch.tensor(total, dtype=torch.float32)
        advantages = group_advantages(rewards, g.group_size, scale=g.scale_rewards)
        engine, n = trainer.engine, g.group_size
        sums = np.zeros(4)  # loss * completions, completions, kl * completions, clipped * completions
        learner_tokens, index = 0, 0
        lr = float(engine.get_lr()[0])
        for b in batches:
            count = b.rows * n
            samples = [s for i in range(b.rows) for s in result.groups[index // n + i]]
            completions = [s.token_ids for s in samples]  # the end-of-turn token included: ending is learned too
            prompts_rep = [b.prompt_ids[i] for i in range(b.rows) for _ in range(n)]
            keys = [f"{b.keys[i]}#{j}" for i in range(b.rows) for j in range(n)]
            mb = collate_rollouts(prompts_rep, completions, trainer.pad_id, keys).to(engine.device)
            adv = advantages[index:index + count].to(engine.device)
            logp, rows = token_logps(engine, mb)
            ref = None
            if g.kl_beta > 0:
                with torch.no_grad(), engine.module.disable_adapter():
                    ref, _ = token_logps(engine.module, mb)
            out = grpo_loss(logp, logp.detach(), ref, rows, adv, g.clip_eps, g.kl_beta)
            engine.backward(out.loss)
            engine.step()
            sums += [float(out.loss.detach()) * count, count, float(out.kl) * count, float(out.clipped) * count]
            learner_tokens += mb.tokens
            index += count
        learn_s = time.perf_counter() - learn_started
        self.step_index += 1

        comp_sums = {k: (float(np.sum(v)), float(np.sum(np.square(v)))) for k, v in components.items()}
        names = sorted(comp_sums)
        reduced = _all_sum([*sums.tolist(), float(np.sum(total)), float(np.sum(np.square(total))), float(sum(off)),
                            float(result.tokens), result.seconds, float(learner_tokens), learn_s, reward_s, sync_s,
                            float(sum(b.rows for b in batches)),
                            *[x for k in names for x in comp_sums[k]]])
        (loss_x, completions_n, kl_x, clip_x, r_sum, r_sq, off_n, roll_tokens, roll_s, learn_tokens, learn_total_s,
         reward_total_s, sync_total_s, prompts_n) = reduced[:14]
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

        def mean_std(s: float, sq: float) -> tuple[float, float]:
            m = s / completions_n
            return m, max(sq / completions_n - m * m, 0.0) ** 0.5

        extra: dict[str, float] = {}
        extra["reward_mean"], extra["reward_std"] = mean_std(r_sum, r_sq)
        for i, k in enumerate(names):
            extra[f"reward_{k}_mean"], extra[f"reward_{k}_std"] = mean_std(reduced[14 + 2 * i], reduced[15 + 2 * i])
        extra.update(kl=kl_x / completions_n, clip_fraction=clip_x / completions_n,
                     rollout_off_target=off_n / completions_n,
                     rollout_tokens_per_s=roll_tokens / max(roll_s, 1e-9),  # the engine serves ranks in turn
                     learner_tokens_per_s=learn_tokens / max(learn_total_s / world, 1e-9),
                     rollout_s=roll_s / world, reward_s=reward_total_s / world, learner_s=learn_total_s / world,
                     sync_s=sync_total_s)
        return StepStats(loss_x / completions_n, trainer._grad_norm(), lr, int(learn_tokens), int(prompts_n),
                         time.perf_counter() - started, extra=extra)
