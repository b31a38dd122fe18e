"""The SFT objective: next-token cross-entropy on response tokens only (labels are IGNORE elsewhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.train.collate import IGNORE, MicroBatch


def token_nll(model: torch.nn.Module, mb: MicroBatch) -> torch.Tensor:
    """Per-token negative log-likelihood [B, L-1] of each next token; 0 where the label is IGNORE."""
    # No attention mask and no KV cache: transformers then derives a per-sample causal mask from the
    # restarting position ids (with a cache it would silently attend across packed samples).
    logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False).logits
    logits = logits[:, :-1].float()
    target = mb.labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                          reduction="none")
    return nll.view(target.shape)


def sft_loss_sum(model: torch.nn.Module, mb: MicroBatch) -> torch.Tensor:
    """Summed loss over the micro-batch's response tokens; the step normalizes by the global token count."""
    return token_nll(model, mb).sum()
