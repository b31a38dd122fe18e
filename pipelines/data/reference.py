"""The same transforms in one process, without Ray: the benchmark's baseline and the tests' oracle.

It holds every row in memory (that is the point of the comparison) and must produce the same dataset id
as `prepare.run_prepare` for the same recipe.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from cluster.models import resolve_model
from pipelines.data import inventory, mixing, output, shards, stages, stats, tokenization
from pipelines.data.builders import plan_units
from pipelines.data.builders.context import BuildContext
from pipelines.data.filters import dedup
from pipelines.data.recipe import PrepareRecipe


def _groups(rows: list[dict], key: str) -> list[list[dict]]:
    out: dict = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return [out[k] for k in sorted(out)]


def run_reference(recipe: PrepareRecipe) -> Path:
    t0 = time.time()
    model_path = resolve_model(recipe.model)
    tokenizer = tokenization.tokenizer_identity(model_path)
    infos = inventory.scan(recipe)
    files = inventory.input_files(infos)
    ctx = BuildContext(recipe, infos)
    staging = output.staging_dir(recipe)

    rows = [row for unit in plan_units(recipe, infos) for row in stages.build_and_filter(unit.as_item(), ctx)]
    for group in _groups(rows, "group"):
        dedup.dedup_group(group, recipe.filters.dedup)
    tokenization.tokenize_rows(tokenization.load_tokenizer(model_path), rows, recipe.max_seq_len)
    counts: Counter = stats.count_rows(rows)

    reject_stats = [shards.write_rejects(g, staging) for g in _groups(stages.rejected(rows), "reject_reason")]

    plan, sft_stats = None, []
    if recipe.sft_builders():
        plan = mixing.plan(stats.available(counts, "sft"), recipe.mixing, recipe.sft_builders())
        targets = plan.group_targets()
        n_shards = mixing.num_shards(plan.total, recipe.shards.num_shards, recipe.shards.samples_per_shard)
        picked = [s for g in _groups(stages.mixable(rows, targets), "group")
                  for s in stages.select(g, targets, recipe.mixing.seed, n_shards)]
        sft_stats = [shards.write_sft_shard(g, staging, g[0]["shard"], recipe.max_seq_len)
                     for g in _groups(picked, "shard")]

    dpo_stats = []
    n_pairs = sum(n for k, n in counts.items() if k[0] == "dpo" and k[3] == stats.KEPT)
    if n_pairs:
        n_shards = mixing.num_shards(n_pairs, recipe.shards.num_shards, recipe.shards.samples_per_shard)
        pairs = stages.pairs(rows, recipe.mixing.seed, n_shards)
        dpo_stats = [shards.write_dpo_shard(g, staging, g[0]["shard"]) for g in _groups(pairs, "shard")]

    sft_entries = output.renumber(staging, sft_stats, "sft")
    dpo_entries = output.renumber(staging, dpo_stats, "dpo")
    body = output.assemble(recipe, tokenizer, files, counts, plan, sft_stats, dpo_stats, sft_entries, dpo_entries,
                           reject_stats)
    elapsed = time.time() - t0
    run_info = {"engine": "single-process", "elapsed_s": round(elapsed, 3), "records_built": len(rows),
                "records_per_s": round(len(rows) / elapsed, 1) if elapsed else None}
    return output.finalize(recipe, staging, body, run_info)
