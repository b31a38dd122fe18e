"""The data pipeline, declared once: its ordered stage lists and the driver that runs them with an executor.

    units ─► build + per-record filters ─► dedup per (builder, language) (group-wise) ─► tokenize (actors)
          ─► materialize ─► counts ─► mix plan
          ├► rejects/<reason>.parquet (group-wise)
          ├► mix candidates per block ─► select per (builder, language) ─► pack + write sft/ (group-wise)
          ├► dpo/ (group-wise)
          └► rl/ (group-wise)

`prepare.RayExecutor` runs each list as Ray Data operators (and the writer branches as concurrent
executions); `reference.LocalExecutor` runs the same lists over whole tables in one process. Both go through
`build_dataset`, so they can differ in scheduling only, never in what they compute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipelines.data import mixing, output, stages, stats, tokenization
from pipelines.data.context import Inputs, RunContext
from pipelines.data.filters import dedup
from pipelines.data.recipe import PrepareRecipe
from pipelines.data.schema import RECORD_SCHEMA, SELECTED_SCHEMA, STATS_SCHEMA
from pipelines.data.stages import Stage

Log = Callable[[str], None]

# The writer branches, by the names their timings carry in run.json.
REJECTS, SFT, DPO, RL = "rejects", "mix_pack_write_sft", "write_dpo", "write_rl"


def record_stages(ctx: RunContext) -> list[Stage]:
    """build → (dedup) → tokenize: the records every later pass reads, materialized once."""
    recipe = ctx.recipe
    out = [Stage("build_and_filter", stages.build_and_filter, stages.BuildArgs(ctx=ctx.build), batching="unit")]
    if recipe.filters.dedup.exact or recipe.filters.dedup.near:  # else nothing needs a group's rows together
        out.append(Stage("dedup", dedup.dedup_table, stages.DedupArgs(cfg=recipe.filters.dedup), key="group",
                         schema=RECORD_SCHEMA))
    out.append(Stage("tokenize", tokenization.TokenizeStage, stages.TokenizeArgs(
        model_path=str(ctx.inputs.model_path), max_seq_len=recipe.max_seq_len, rows_per_call=recipe.ray.batch_size),
        actor=True, batching="block"))
    return out


COUNT = [Stage("count_block", stages.count_block)]


def writer_stages(ctx: RunContext) -> dict[str, list[Stage]]:
    """The writer branches the counts call for, each over the materialized records; every branch ends in
    group-wise writers that give one statistics row per file."""
    out_dir, seed = str(ctx.staging), ctx.recipe.mixing.seed
    write = stages.WriteArgs(out_dir=out_dir)
    branches: dict[str, list[Stage]] = {}
    if ctx.rejected:
        branches[REJECTS] = [
            Stage("keep_rejected", stages.keep_rejected),
            Stage("write_rejects", stages.write_rejects, write, key="reject_reason", schema=STATS_SCHEMA),
        ]
    if ctx.plan:
        targets = ctx.plan.group_targets()
        branches[SFT] = [
            Stage("mix_candidates", stages.mix_candidates, stages.CandidateArgs(
                limits=mixing.candidate_limits(targets, ctx.plan.available), seed=seed)),
            Stage("select", stages.select, stages.SelectArgs(
                targets=targets, seed=seed, num_shards=ctx.num_shards(ctx.plan.total)), key="group",
                schema=SELECTED_SCHEMA),
            Stage("pack_and_write", stages.pack_and_write, stages.PackArgs(
                out_dir=out_dir, max_seq_len=ctx.recipe.max_seq_len), key="shard", schema=STATS_SCHEMA),
        ]
    if ctx.pairs:
        branches[DPO] = [
            Stage("place_pairs", stages.place_pairs, stages.PlaceArgs(seed=seed, num_shards=ctx.num_shards(ctx.pairs))),
            Stage("write_pairs", stages.write_pairs, write, key="shard", schema=STATS_SCHEMA),
        ]
    if ctx.rl_prompts:
        branches[RL] = [
            Stage("place_rl", stages.place_rl, stages.PlaceArgs(seed=seed, num_shards=ctx.num_shards(ctx.rl_prompts))),
            Stage("write_rl", stages.write_rl, write, key="shard", schema=STATS_SCHEMA),
        ]
    return branches


class Executor(Protocol):
    """Runs stage lists over its own kind of data (a Ray Dataset, an Arrow table)."""

    info: dict[str, Any]  # what run.json records about the engine

    def source(self, items: list[dict]) -> Any: ...

    def run(self, data: Any, stage_list: list[Stage]) -> Any: ...

    def materialize(self, data: Any) -> Any: ...

    def collect(self, data: Any) -> list[str]:
        """The `stats` column of a counting or writing pass."""
        ...

    def run_branches(self, jobs: dict[str, Callable[[], list[str]]]) -> dict[str, list[str]]: ...


def build_dataset(recipe: PrepareRecipe, inputs: Inputs, ex: Executor, started: float, timings: dict[str, float],
                  log: Log) -> Path | str:
    """Run the stage lists with `ex` and write the dataset; returns `<output_dir>/<name>-<dataset_id[:12]>/`.
    `started` is when the run began, so elapsed_s covers the input checks (and a cluster's start)."""
    ctx = RunContext(recipe, inputs, output.staging_dir(recipe))

    def lap(name: str, since: float) -> float:
        now = time.time()
        timings[name] = round(now - since, 3)
        return now

    def branch(name: str, stage_list: list[Stage]) -> Callable[[], list[str]]:
        def job() -> list[str]:
            t0 = time.time()
            out = ex.collect(ex.run(records, stage_list))
            timings[name] = round(time.time() - t0, 3)
            return out
        return job

    t = time.time()
    try:
        records = ex.materialize(ex.run(ex.source([u.as_item() for u in inputs.units]), record_stages(ctx)))
        t = lap("build_filter_dedup_tokenize", t)
        for text in ex.collect(ex.run(records, COUNT)):
            ctx.counts.update(stats.decode_counts(text))
        log(f"{ctx.built} records built, {ctx.rejected} rejected")
        t = lap("counts", t)
        if recipe.sft_builders():
            ctx.plan = mixing.plan(stats.available(ctx.counts, "sft"), recipe.mixing, recipe.sft_builders())
            log(f"mixing {ctx.plan.total} SFT samples from {len(ctx.plan.group_targets())} (builder, language) "
                f"groups into {ctx.num_shards(ctx.plan.total)} shard(s)")
        written = ex.run_branches({name: branch(name, sl) for name, sl in writer_stages(ctx).items()})
        t = lap("write_outputs", t)
    except Exception:
        output.remove(ctx.staging)
        raise

    ctx.reject_files, ctx.sft_files, ctx.dpo_files, ctx.rl_files = (
        [json.loads(s) for s in written.get(name, [])] for name in (REJECTS, SFT, DPO, RL))
    body = output.assemble(ctx)
    elapsed = time.time() - started
    run_info = {**ex.info, "elapsed_s": round(elapsed, 3), "stage_s": timings, "records_built": ctx.built,
                "records_per_s": round(ctx.built / elapsed, 1) if elapsed else None}
    final = output.finalize(ctx, body, run_info)
    log(f"dataset {str(final).rsplit('/', 1)[-1]} written in {elapsed:.1f}s")
    return final
