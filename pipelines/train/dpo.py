"""Direct preference optimization (sigmoid loss) against a frozen reference.

The reference is a frozen copy of the base model for full fine-tuning, or the policy itself with its
LoRA adapters disabled, which is the same base at no extra memory.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.train.collate import IGNORE, MicroBatch
from pipelines.train.lm_head import response_nll


def sequence_logps(model: torch.nn.Module, mb: MicroBatch) -> torch.Tensor:
    """Sum of response-token log-probabilities per sequence: [2 * pairs], chosen first."""
    nll, rows = response_nll(model, mb)
    return -torch.zeros(mb.input_ids.size(0), dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)


@dataclass
class DpoOutput:
    loss: torch.Tensor  # mean over the micro-batch's pairs
    chosen_rewards: torch.Tensor  # [pairs], beta * (policy - reference) log-ratio, detached
    rejected_rewards: torch.Tensor


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, pairs: int, beta: float, sft_weight: float = 0.0,
             chosen_tokens: torch.Tensor | None = None) -> DpoOutput:
    """DPO's sigmoid loss; with `sft_weight` > 0 plus that weight times the chosen answers' per-token NLL (RPO,
    TRL's `rpo_alpha`), which keeps the policy on faithful translations while it learns the preference."""
    pc, pr = policy[:pairs], policy[pairs:]
    rc, rr = reference[:pairs], reference[pairs:]
    logits = (pc - rc) - (pr - rr)
    loss = -F.logsigmoid(beta * logits).mean()
    if sft_weight > 0:
        if chosen_tokens is None:
            raise ValueError("sft_weight needs the chosen answers' token counts")
        loss = loss + sft_weight * (-pc / chosen_tokens.clamp(min=1).to(pc.dtype)).mean()
    return DpoOutput(loss, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach())


def chosen_token_counts(mb: MicroBatch) -> torch.Tensor:
    """Supervised tokens of each chosen answer: [pairs]."""
    return (mb.labels[: mb.pairs, 1:] != IGNORE).sum(dim=1)


def reference_logps(
    reference: torch.nn.Module | None, policy: torch.nn.Module, mb: MicroBatch
) -> torch.Tensor:
    """Reference log-probs without gradients: the frozen copy, or the policy with adapters disabled."""
    ctx: AbstractContextManager = nullcontext()
    model = reference
    if reference is None:
        model = policy
        ctx = policy.disable_adapter()  # peft: the base model underneath the adapters
    with torch.no_grad(), ctx:
        return sequence_logps(model, mb)
