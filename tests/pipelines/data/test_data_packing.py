"""Packing: best-fit decreasing into rows of at most max_seq_len, position ids restart per sample."""

import random

import pytest

from pipelines.data.packing import best_fit_decreasing, pack_rows


def test_bins_respect_capacity_and_pack_tightly():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(2000)]
    bins = best_fit_decreasing(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    efficiency = sum(lengths) / (len(bins) * 1024)
    assert efficiency > 0.95
    with pytest.raises(ValueError, match="capacity"):
        best_fit_decreasing([2000], 1024)


def test_rows_concatenate_samples():
    samples = [
        {"sample_id": f"s{i}", "input_ids": list(range(100, 100 + n)), "labels": [-100] * 2 + list(range(n - 2)),
         "order_key": 10 - i}
        for i, n in enumerate([5, 3, 7, 4])
    ]
    rows = pack_rows(samples, 10)
    assert [len(r["input_ids"]) for r in rows] == [r["num_tokens"] for r in rows]
    assert all(r["num_tokens"] <= 10 for r in rows) and sum(r["num_samples"] for r in rows) == 4
    by_id = {s["sample_id"]: s for s in samples}
    for r in rows:
        pos = 0
        for sid in r["sample_ids"]:
            s = by_id[sid]
            n = len(s["input_ids"])
            assert list(r["input_ids"][pos:pos + n]) == s["input_ids"]
            assert list(r["labels"][pos:pos + n]) == s["labels"]
            assert list(r["position_ids"][pos:pos + n]) == list(range(n))
            pos += n
    keys = [min(by_id[sid]["order_key"] for sid in r["sample_ids"]) for r in rows]
    assert keys == sorted(keys)
