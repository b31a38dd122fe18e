"""Direct preference optimization (sigmoid loss) against a frozen reference.

The reference is a frozen copy of the base model for full fine-tuning, or the policy itself with its
LoRA adapters disabled, which is the same base at no extra memory.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.train.collate import MicroBatch
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


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, pairs: int, beta: float) -> DpoOutput:
    pc, pr = policy[:pairs], policy[pairs:]
    rc, rr = reference[:pairs], reference[pairs:]
    logits = (pc - rc) - (pr - rr)
    loss = -F.logsigmoid(beta * logits).mean()
    return DpoOutput(loss, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach())


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
