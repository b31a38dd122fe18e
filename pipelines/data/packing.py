"""Pack tokenized samples into rows of at most `max_seq_len` tokens (no padding is stored).

Best-fit decreasing: each sample, longest first, goes into the fullest row it still fits. Position ids
restart at 0 for every sample so the trainer can keep samples apart; packing efficiency is real tokens over
row slots (rows x max_seq_len).
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of sample indices; ties are broken by index, so the result is a function of the input only."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sample {i} has {n} tokens > capacity {capacity}")
        pos = bisect_left(free, (n, -1))
        if pos < len(free):
            remaining, b = free.pop(pos)
            bins[b].append(i)
            insort(free, (remaining - n, b))
        else:
            bins.append([i])
            insort(free, (capacity - n, len(bins) - 1))
    return bins


def pack_rows(samples: list[dict], max_seq_len: int) -> list[dict]:
    """Packed rows from samples with `sample_id`, `input_ids`, `labels`, `order_key`; rows in key order."""
    bins = best_fit_decreasing([len(s["input_ids"]) for s in samples], max_seq_len)
    rows = []
    for members in bins:
        parts = [samples[i] for i in members]
        rows.append({
            "input_ids": np.concatenate([np.asarray(p["input_ids"], dtype=np.int32) for p in parts]),
            "labels": np.concatenate([np.asarray(p["labels"], dtype=np.int32) for p in parts]),
            "position_ids": np.concatenate([np.arange(len(p["input_ids"]), dtype=np.int32) for p in parts]),
            "sample_ids": [p["sample_id"] for p in parts],
            "num_tokens": sum(len(p["input_ids"]) for p in parts),
            "num_samples": len(parts),
            "_order": min(p["order_key"] for p in parts),
        })
    rows.sort(key=lambda r: r["_order"])
    for r in rows:
        del r["_order"]
    return rows
