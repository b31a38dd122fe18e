"""Micro-batches from shard rows: right-padding to the longest row, and position ids that keep packed
samples apart.

No attention mask is passed to the model: with position ids that restart at 0 for each packed sample,
transformers builds a causal mask that never attends across samples. Padding is given positions
0, 1, ... too, so it forms its own segment that no real token sees, and its labels carry no loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [B, L] int64
    labels: torch.Tensor  # [B, L]; IGNORE where no loss (prompt, padding, sample starts)
    position_ids: torch.Tensor  # [B, L]
    keys: list[str]  # row identities, in order (data position bookkeeping)
    tokens: int  # real (non-pad) tokens, the throughput numerator
    rows: int  # shard rows this batch consumed (SFT rows or DPO pairs)
    pairs: int = 0  # DPO: the first `pairs` rows are chosen, the next `pairs` rejected

    def to(self, device: torch.device | str) -> MicroBatch:
        for name in ("input_ids", "labels", "position_ids"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self

    @property
    def loss_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())


def _pad(seqs: Sequence[np.ndarray], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return out


def _positions(lengths: Sequence[int], length: int, given: Sequence[np.ndarray] | None = None) -> torch.Tensor:
    out = torch.empty((len(lengths), length), dtype=torch.long)
    for i, n in enumerate(lengths):
        if given is not None:
            out[i, :n] = torch.as_tensor(np.asarray(given[i], dtype=np.int64))
        else:
            out[i, :n] = torch.arange(n)
        out[i, n:] = torch.arange(length - n)  # padding: a segment of its own
    return out


def collate_sft(batch: dict[str, np.ndarray], pad_id: int, max_seq_len: int | None = None) -> MicroBatch:
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    lengths = [len(x) for x in ids]
    keys = ["|".join(map(str, s)) for s in batch["sample_ids"]]
    for n, lab, p, key in zip(lengths, labels, pos, keys):
        if len(lab) != n or len(p) != n:
            raise ValueError(
                f"row {key}: input_ids, labels and position_ids differ in length ({n}, {len(lab)}, {len(p)})"
            )
        if max_seq_len is not None and n > max_seq_len:
            raise ValueError(f"row {key}: {n} tokens exceed batch.max_seq_len {max_seq_len}")
    length = max(lengths)
    input_ids = _pad(ids, pad_id, length)
    lab = _pad(labels, IGNORE, length)
    position_ids = _positions(lengths, length, pos)
    lab[position_ids == 0] = IGNORE  # a sample's first token is never predicted from the previous sample
    return MicroBatch(input_ids, lab, position_ids, keys, tokens=sum(lengths), rows=len(lengths))


def collate_dpo(batch: dict[str, np.ndarray], pad_id: int, max_seq_len: int | None = None) -> MicroBatch:
    """Chosen sequences first, then rejected ones, in one padded batch (one forward pass for both)."""
    prompts, keys = batch["prompt_ids"], [str(x) for x in batch["sample_id"]]
    seqs, labels = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for p, r, key in zip(prompts, batch[side], keys):
            p, r = np.asarray(p, dtype=np.int64), np.asarray(r, dtype=np.int64)
            if len(r) == 0:
                raise ValueError(f"pair {key}: {side} is empty")
            if max_seq_len is not None and len(p) + len(r) > max_seq_len:
                raise ValueError(f"pair {key}: prompt + {side} = {len(p) + len(r)} tokens exceed batch.max_seq_len "
                                 f"{max_seq_len}")
            seqs.append(np.concatenate([p, r]))
            labels.append(np.concatenate([np.full(len(p), IGNORE), r]))
    lengths = [len(s) for s in seqs]
    length = max(lengths)
    return MicroBatch(
        _pad(seqs, pad_id, length), _pad(labels, IGNORE, length), _positions(lengths, length), keys,
        tokens=sum(lengths), rows=len(keys), pairs=len(keys),
    )
