"""The SFT objective: next-token cross-entropy on response tokens only (labels are IGNORE elsewhere)."""

from __future__ import annotations

import torch

from pipelines.train.collate import MicroBatch
from pipelines.train.lm_head import response_nll


def sft_loss_sum(model: torch.nn.Module, mb: MicroBatch) -> torch.Tensor:
    """Summed loss over the micro-batch's response tokens; the step normalizes by the global token count."""
    return response_nll(model, mb)[0].sum()
