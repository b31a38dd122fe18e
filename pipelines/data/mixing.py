"""Mixing: builder (source) ratios, per-language temperature sampling, a total size and a fixed seed.

The driver turns the counts of surviving records into exact per-(builder, language) targets; each group
then picks its records by a seeded rank, repeating the whole group when the target exceeds it (`select_group`).
Counts are exact (largest-remainder rounding), so the mixture's builder ratios match the recipe to one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from pipelines.data import seeding
from pipelines.data.recipe import Mixing
from pipelines.data.schema import SELECTED_SCHEMA


class MixingError(ValueError):
    pass


def largest_remainder(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Integers proportional to `weights` that sum to `total` (ties broken by key)."""
    wsum = sum(weights.values())
    if total <= 0 or wsum <= 0:
        return dict.fromkeys(weights, 0)
    exact = {k: total * w / wsum for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    short = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:short]:
        out[k] += 1
    return out


@dataclass
class MixPlan:
    total: int
    ratios: dict[str, float]  # normalized, per builder
    available: dict[str, dict[str, int]]  # builder -> lang -> records after filtering
    targets: dict[str, dict[str, int]]  # builder -> lang -> samples in the mixture

    def group_targets(self) -> dict[str, int]:
        return {group_key(b, lang): n for b, per in self.targets.items() for lang, n in per.items()}

    def as_dict(self) -> dict:
        repeats = {
            b: {lang: round(n / self.available[b][lang], 3) for lang, n in per.items() if n > self.available[b][lang]}
            for b, per in self.targets.items()
        }
        return {"total": self.total, "ratios": self.ratios, "available": self.available, "targets": self.targets,
                "upsampled": {b: r for b, r in repeats.items() if r}}


def group_key(builder: str, lang: str) -> str:
    return f"{builder}\t{lang}"


def plan(available: dict[str, dict[str, int]], cfg: Mixing, builders: list[str]) -> MixPlan:
    """Exact targets per (builder, language) from what survived the filters."""
    avail = {b: dict(sorted(available.get(b, {}).items())) for b in builders}
    sizes = {b: sum(per.values()) for b, per in avail.items()}
    if cfg.ratios is None:
        weights = {b: float(n) for b, n in sizes.items() if n > 0}
        if not weights:
            raise MixingError("no SFT records survived the filters (see rejects/)")
    else:
        weights = {b: float(w) for b, w in cfg.ratios.items() if w > 0}
        empty = [b for b in weights if sizes.get(b, 0) == 0]
        if empty:
            raise MixingError(f"mixing.ratios: builder(s) {empty} have no records left after filtering (see rejects/)")
    wsum = sum(weights.values())
    ratios = {b: w / wsum for b, w in sorted(weights.items())}
    # Without a total: the largest mixture that needs no builder to repeat its records.
    total = cfg.total or min(math.floor(sizes[b] / r + 1e-9) for b, r in ratios.items())
    per_builder = largest_remainder(total, ratios)
    targets = {}
    for b, n_b in per_builder.items():
        lang_w = {lang: n ** (1.0 / cfg.temperature) for lang, n in avail[b].items() if n > 0}
        targets[b] = {lang: n for lang, n in largest_remainder(n_b, lang_w).items() if n > 0}
    return MixPlan(total, ratios, {b: avail[b] for b in ratios}, targets)


def rank(seed: int, sample_id: str) -> float:
    return seeding.uniform(seed, "select", sample_id)


def candidate_limits(targets: dict[str, int], available: dict[str, dict[str, int]]) -> dict[str, int | None]:
    """Per drawn group, how many of its lowest-ranked records its picks can come from: the target, or None
    (all of them) where the target repeats the group."""
    sizes = {group_key(b, lang): n for b, per in available.items() for lang, n in per.items()}
    return {g: (None if n >= sizes[g] else n) for g, n in sorted(targets.items()) if n > 0}


def picks(rows: list[dict], target: int, seed: int) -> list[tuple[dict, int]]:
    """(row, copy number) of `target` samples from one group by seeded rank; whole passes repeat before a
    partial one. Reads only `sample_id`."""
    if not rows or target <= 0:
        return []
    rows = sorted(rows, key=lambda r: (rank(seed, r["sample_id"]), r["sample_id"]))
    full, rem = divmod(target, len(rows))
    return [(r, c) for c in range(full) for r in rows] + [(r, full) for r in rows[:rem]]


def placement(sample_id: str, copy: int, seed: int, num_shards: int) -> tuple[str, int, int]:
    """(sample id of this copy, order key, shard)."""
    sid = sample_id + (f"#{copy}" if copy else "")
    key = seeding.key64(seed, "order", sid)
    return sid, key >> 1, key % num_shards


def select_group(group: pa.Table, target: int, seed: int, num_shards: int) -> pa.Table:
    """`target` samples of one (builder, language) group, one row per copy with its sample id, order key and
    shard. The picks are made on ids alone and only the picked rows' tokens are taken (a group holds every
    candidate, the mixture often a small share of them)."""
    ids = group.column("sample_id").to_pylist()
    chosen = picks([{"sample_id": sid, "row": i} for i, sid in enumerate(ids)], target, seed)
    if not chosen:
        return SELECTED_SCHEMA.empty_table()
    placed = [placement(r["sample_id"], copy, seed, num_shards) for r, copy in chosen]
    taken = group.take(pa.array([r["row"] for r, _ in chosen], pa.int64()))
    return pa.table({
        "sample_id": pa.array([p[0] for p in placed], pa.string()),
        "builder": taken.column("builder"), "lang": taken.column("lang"),
        "order_key": pa.array([p[1] for p in placed], pa.int64()),
        "shard": pa.array([p[2] for p in placed], pa.int32()),
        "input_ids": taken.column("input_ids"), "labels": taken.column("labels"),
        "num_tokens": taken.column("num_tokens"),
    }, schema=SELECTED_SCHEMA)


def num_shards(samples: int, explicit: int | None, per_shard: int) -> int:
    return explicit or max(1, math.ceil(samples / per_shard))
