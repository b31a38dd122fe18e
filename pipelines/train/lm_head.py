"""Next-token NLL of the supervised tokens only, without the batch's full logits.

Gemma 3's LM head has 262k rows: fp32 logits for a 4 x 256-token micro-batch take 1 GiB (and as much again for
their softmax and gradient), while prompt and padding positions carry no loss. So the backbone's final hidden
states are taken only where a label follows (labels != IGNORE after the shift) and projected through the model's
own head module in chunks, each chunk's logits upcast to fp32 for its cross-entropy. Backward needs each chunk's
log-probabilities: the first RETAIN_LOGITS of them are kept, later chunks are recomputed in backward (activation
checkpointing), so memory stays bounded for any batch and small batches pay no recomputation (on Gemma 3 270M
with 4 x 256 tokens, recomputing every chunk cost ~20% more time; benchmarks/lm_head_loss.py).

The head is called as a module, so PEFT's wrappers (trainable token rows of a tied head, adapters disabled for
the DPO reference) and ZeRO-3's parameter gathering apply as in the model's own forward.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipelines.train.collate import IGNORE, MicroBatch

# Logits per chunk: 512 MiB in fp32 (512 positions of Gemma 3's 262k vocabulary). Smaller chunks were slower on
# CPU: PEFT's trainable-token head rebuilds its full weight on every call.
CHUNK_LOGITS = 1 << 27
RETAIN_LOGITS = 1 << 28  # log-probabilities kept for backward (1 GiB in fp32); chunks beyond are recomputed
# Logit transforms of other architectures' forward that the chunked head would silently skip.
_UNSUPPORTED = ("logit_scale", "logits_scaling", "output_multiplier")  # Cohere, Granite, MuseGlimmer


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DeepSpeed engine (its `.module`); PEFT models forward attribute access themselves."""
    ds = sys.modules.get("deepspeed")  # not imported: cannot be an engine
    return model.module if ds is not None and isinstance(model, ds.DeepSpeedEngine) else model


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def final_logit_softcap(config) -> float | None:
    """Gemma 2/3's `final_logit_softcapping` (logits = cap * tanh(logits / cap)), None where not configured."""
    text = _text_config(config)
    for name in _UNSUPPORTED:
        if getattr(text, name, None) not in (None, 1, 1.0):
            raise NotImplementedError(f"model config {name}={getattr(text, name)!r}: the chunked LM-head loss "
                                      "applies only final_logit_softcapping")
    cap = getattr(text, "final_logit_softcapping", None)
    return None if cap is None else float(cap)


def _chunk_nll(head: torch.nn.Module, cap: float | None, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, target, reduction="none")


def response_nll(model: torch.nn.Module, mb: MicroBatch, chunk_tokens: int | None = None,
                 retain_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL of each supervised next token [N], the batch row it belongs to [N]), in row-major order.

    `model` is a causal LM, PEFT-wrapped or not, or a DeepSpeed engine around one. `chunk_tokens` and
    `retain_tokens` default to CHUNK_LOGITS and RETAIN_LOGITS over the vocabulary size.
    """
    inner = _unwrap(model)
    head = inner.get_output_embeddings()
    cap = final_logit_softcap(inner.config)
    # No attention mask and no KV cache: transformers then derives a per-sample causal mask from the restarting
    # position ids (with a cache it would silently attend across packed samples). An empty `logits_to_keep`
    # makes the model's forward skip its own head; the last hidden state is after the final norm.
    keep = torch.empty(0, dtype=torch.long, device=mb.input_ids.device)
    out = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False, output_hidden_states=True,
                logits_to_keep=keep)
    mask = mb.labels[:, 1:] != IGNORE
    hidden = out.hidden_states[-1][:, :-1][mask]  # [N, H]: the positions whose next token is supervised
    target = mb.labels[:, 1:][mask]
    rows = mask.nonzero()[:, 0]
    vocab = int(_text_config(inner.config).vocab_size)
    size = chunk_tokens or max(1, CHUNK_LOGITS // vocab)
    retain = RETAIN_LOGITS // vocab if retain_tokens is None else retain_tokens
    parts = []
    for start in range(0, max(len(target), 1), size):  # one empty chunk keeps an all-prompt batch in the graph
        h, t = hidden[start:start + size], target[start:start + size]
        if start + len(t) > retain and torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_nll, head, cap, h, t, use_reentrant=False))
        else:
            parts.append(_chunk_nll(head, cap, h, t))
    return torch.cat(parts), rows
