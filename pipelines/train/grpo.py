"""Group relative policy optimization (GRPO, DeepSeekMath) for translation rewards.

Per prompt, the rollout engine samples a group of G completions; each completion's reward is normalized within
its group (advantage = (r - mean) / (std + eps)), so the policy moves towards the better translations of the
same source without a value model. The loss is PPO's clipped surrogate per completion token, with an optional
KL penalty to the reference (the k3 estimator, exp(ref - logp) - (ref - logp) - 1, always >= 0), averaged over
each completion's tokens and then over completions (the original GRPO normalization).

One policy update per rollout batch: the rollout policy is the current policy, so the importance ratio is 1 in
value and the clipped loss reduces to the policy gradient (its gradient is still the ratio's). The engine's own
sampling log-probabilities are not used as the old policy: vLLM's kernels differ slightly from the learner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.train.collate import IGNORE, MicroBatch, _pad, _positions
from pipelines.train.lm_head import response_nll


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """[B*G] rewards, groups contiguous -> [B*G] advantages. A group whose rewards are all equal has advantage 0
    (nothing to learn from it); `scale=False` keeps the raw difference to the group mean (Dr. GRPO)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=True) + eps)
    return centred.reshape(-1)


def collate_rollouts(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
                     keys: Sequence[str]) -> MicroBatch:
    """Prompt + completion per row, loss (log-probabilities) on the completion tokens only."""
    seqs, labels = [], []
    for p, c, key in zip(prompts, completions, keys):
        p, c = np.asarray(p, dtype=np.int64), np.asarray(c, dtype=np.int64)
        if len(c) == 0:
            raise ValueError(f"rollout {key}: empty completion (the engine must produce at least one token)")
        seqs.append(np.concatenate([p, c]))
        labels.append(np.concatenate([np.full(len(p), IGNORE), c]))
    lengths = [len(s) for s in seqs]
    length = max(lengths)
    return MicroBatch(_pad(seqs, pad_id, length), _pad(labels, IGNORE, length), _positions(lengths, length),
                      list(keys), tokens=sum(lengths), rows=len(keys))


def token_logps(model: torch.nn.Module, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each completion token [N], its row [N]) through the chunked LM head."""
    nll, rows = response_nll(model, mb)
    return -nll, rows


@dataclass
class GrpoOutput:
    loss: torch.Tensor  # mean over this micro-batch's completions of their token-mean loss
    kl: torch.Tensor  # mean per-token KL estimate to the reference (0 without one), detached
    clipped: torch.Tensor  # share of tokens whose ratio was clipped, detached


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, rows: torch.Tensor,
              advantages: torch.Tensor, clip_eps: float, kl_beta: float) -> GrpoOutput:
    """Token tensors [N] (row-major, `rows` gives each token's completion), advantages per completion [R]."""
    n_rows = advantages.numel()
    adv = advantages[rows]
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and kl_beta > 0:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_beta * kl
    counts = torch.zeros(n_rows, dtype=logp.dtype, device=logp.device).index_add(0, rows, torch.ones_like(logp))
    per_row = torch.zeros(n_rows, dtype=logp.dtype, device=logp.device).index_add(0, rows, per_token)
    loss = (per_row / counts.clamp(min=1)).mean()
    was_clipped = (unclipped != clipped).float()
    return GrpoOutput(loss, kl.detach().mean() if kl.numel() else kl.sum().detach(),
                      was_clipped.mean().detach() if was_clipped.numel() else was_clipped.sum().detach())
