"""`run_prepare`: the Ray Data pipeline, run on an embedded cluster or the one `address` names.

    units ─► build + per-record filters (tasks) ─► dedup per (builder, language) (group tasks)
          ─► tokenize (actor pool) ─► materialize (object store, not the driver) ─► counts ─► mix plan
          ├► rejects/<reason>.parquet (group tasks)
          ├► mix candidates per block ─► select per (builder, language) ─► pack + write sft/ (group tasks)
          └► dpo/ (group tasks)

The three writers run as concurrent Ray Data executions over the same materialized records. Mixing ranks
records by a seeded hash of their id, so each block passes on only its lowest-ranked rows per group (at most
the group's target): few rows, not every candidate's tokens, cross the mix shuffle.

The driver holds only the plan, counts and per-file statistics. Every Ray Data stage asks for a fraction of
a CPU and the tokenizer pool leaves at least one CPU free, so tasks always find room next to the actors
(the Ray Data/Train CPU deadlock in ../shared/STACK.md). Shuffles use Ray's task-based sort shuffle, which
needs no long-lived aggregator actors, over a few coalesced blocks (`grouped`). Group-wise and tokenizer
stages move only the columns they read into Python (`dedup.dedup_table`, `tokenization.tokenize_table`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cluster.models import resolve_model
from cluster.ray_session import ray_session
from pipelines.data import inventory, mixing, output, shards, stages, stats, tokenization
from pipelines.data.builders import plan_units
from pipelines.data.builders.context import BuildContext
from pipelines.data.filters import dedup
from pipelines.data.readers import InputError
from pipelines.data.recipe import PrepareRecipe, RayExecution
from pipelines.data.schema import (
    PAIR_SCHEMA,
    RECORD_SCHEMA,
    SELECTED_SCHEMA,
    STATS_SCHEMA,
    from_table,
    to_table,
)

Log = Callable[[str], None]


# ---- Ray Data stage functions (module level: their names label the progress bars) ------------------


def build_and_filter(batch: pa.Table, ctx: BuildContext) -> pa.Table:
    rows: list[dict] = []
    for unit in batch.to_pylist():
        rows.extend(stages.build_and_filter(unit, ctx))
    return to_table(rows, RECORD_SCHEMA)


def dedup_by_language(group: pa.Table, ctx: BuildContext) -> pa.Table:
    return dedup.dedup_table(group, ctx.recipe.filters.dedup)


def count_block(batch: pa.Table) -> pa.Table:
    return pa.table({"stats": [stats.encode_counts(stats.count_table(batch))]}, schema=STATS_SCHEMA)


def keep_rejected(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch["reject_reason"]))


def write_rejects(group: pa.Table, out_dir: str) -> pa.Table:
    return _stats_row(shards.write_rejects(from_table(group), Path(out_dir)))


def mix_candidates(batch: pa.Table, limits: dict[str, int | None], seed: int) -> pa.Table:
    """The block's surviving SFT rows that can be among their group's picks: a group's `limit` lowest-ranked
    rows (`mixing.picks`' order), or all of them where the limit is None (the group repeats whole). Every pick
    is among its own block's lowest-ranked, so only a few rows per group cross the mix shuffle, not every
    candidate's tokens."""
    keep = pc.and_(pc.equal(batch["kind"], "sft"), pc.is_null(batch["reject_reason"]))
    t = batch.filter(keep)
    group = pc.binary_join_element_wise(t["builder"], t["lang"], "\t")
    t = t.set_column(t.schema.get_field_index("group"), "group", group)
    t = t.filter(pc.is_in(t["group"], value_set=pa.array(sorted(limits), pa.string())))
    rank = pa.array([mixing.rank(seed, sid) for sid in t.column("sample_id").to_pylist()], pa.float64())
    t = t.append_column("rank", rank).sort_by([("group", "ascending"), ("rank", "ascending"),
                                              ("sample_id", "ascending")])
    rows, start, groups = [], 0, t.column("group").to_pylist()
    for end in [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]] + ([len(groups)] if groups else []):
        limit = limits[groups[start]]
        rows.extend(range(start, end if limit is None else min(end, start + limit)))
        start = end
    return t.take(pa.array(rows, pa.int64())).select(
        ["sample_id", "builder", "lang", "group", "input_ids", "labels", "num_tokens"])


def select_group(group: pa.Table, targets: dict[str, int], seed: int, num_shards: int) -> pa.Table:
    """`mixing.select_group` on Arrow: the picks are made on ids alone and only the picked rows' tokens are
    taken (a group holds every candidate, the mixture often a small share of them)."""
    ids = group.column("sample_id").to_pylist()
    if not ids:
        return SELECTED_SCHEMA.empty_table()
    chosen = mixing.picks([{"sample_id": sid, "row": i} for i, sid in enumerate(ids)],
                          targets[group.column("group")[0].as_py()], seed)
    rows = pa.array([r["row"] for r, _ in chosen], pa.int64())
    placed = [mixing.placement(r["sample_id"], copy, seed, num_shards) for r, copy in chosen]
    taken = group.take(rows)
    return pa.table({
        "sample_id": pa.array([p[0] for p in placed], pa.string()),
        "builder": taken.column("builder"), "lang": taken.column("lang"),
        "order_key": pa.array([p[1] for p in placed], pa.int64()),
        "shard": pa.array([p[2] for p in placed], pa.int32()),
        "input_ids": taken.column("input_ids"), "labels": taken.column("labels"),
        "num_tokens": taken.column("num_tokens"),
    }, schema=SELECTED_SCHEMA)


def pack_and_write(group: pa.Table, out_dir: str, max_seq_len: int) -> pa.Table:
    rows = from_table(group)
    return _stats_row(shards.write_sft_shard(rows, Path(out_dir), rows[0]["shard"], max_seq_len))


def place_pairs(batch: pa.Table, seed: int, num_shards: int) -> pa.Table:
    keep = pc.and_(pc.equal(batch["kind"], "dpo"), pc.is_null(batch["reject_reason"]))
    return to_table(stages.pairs(from_table(batch.filter(keep)), seed, num_shards), PAIR_SCHEMA)


def write_pairs(group: pa.Table, out_dir: str) -> pa.Table:
    rows = from_table(group)
    return _stats_row(shards.write_dpo_shard(rows, Path(out_dir), rows[0]["shard"]))


def _stats_row(d: dict) -> pa.Table:
    import json

    return pa.table({"stats": [json.dumps(d, sort_keys=True)]}, schema=STATS_SCHEMA)


def _collect(ds) -> list[dict]:
    import json

    return [json.loads(r["stats"]) for r in ds.take_all()]


# ---- orchestration --------------------------------------------------------------------------------


@contextmanager
def data_context(cfg: RayExecution) -> Iterator[None]:
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    saved = (ctx.shuffle_strategy, ctx.enable_progress_bars)
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ctx.enable_progress_bars = cfg.progress
    try:
        yield
    finally:
        ctx.shuffle_strategy, ctx.enable_progress_bars = saved


def grouped(ds, key: str, blocks: int):
    """Group by `key` after coalescing into `blocks` blocks. The task-based sort shuffle makes inputs x outputs
    objects: hundreds of unit- or batch-sized blocks would mean 10^5 small objects, each held in the driver's
    memory, and their bookkeeping would cost more than the work."""
    return ds.repartition(blocks).groupby(key)


def tokenize_pool_size(cfg: RayExecution, cluster_cpus: float, log: Log) -> int:
    """Actors that fit while leaving at least one CPU (or half of a tiny cluster) to the tasks."""
    room = max(cfg.actor_cpus, cluster_cpus - min(1.0, cluster_cpus / 2))
    fit = max(1, math.floor(room / cfg.actor_cpus + 1e-9))
    want = cfg.tokenize_actors or min(8, fit)
    if want > fit:
        log(f"ray.tokenize_actors={want} would starve the other stages on {cluster_cpus:g} CPUs; using {fit}")
    return min(want, fit)


def _unwrap_input_error(exc: BaseException) -> InputError | None:
    """The InputError a task raised; Ray Data re-raises it wrapped, keeping only its text."""
    marker = f"{InputError.__module__}.{InputError.__qualname__}: "
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return None
        if isinstance(seen, InputError):
            return seen
        for line in str(seen).splitlines():
            if line.startswith(marker):
                return InputError(line[len(marker):])
        seen = seen.__cause__ or seen.__context__
    return None


def _write_rejects(records, staging: Path, blocks: int, task: dict, scan: dict) -> list[dict]:
    rejected = records.map_batches(keep_rejected, batch_format="pyarrow", **scan)
    return _collect(grouped(rejected, "reject_reason", blocks).map_groups(
        write_rejects, fn_kwargs={"out_dir": str(staging)}, batch_format="pyarrow", **task))


def _write_sft(records, recipe: PrepareRecipe, plan: mixing.MixPlan, staging: Path, blocks: int, task: dict,
               scan: dict, log: Log) -> list[dict]:
    targets, seed = plan.group_targets(), recipe.mixing.seed
    n_shards = mixing.num_shards(plan.total, recipe.shards.num_shards, recipe.shards.samples_per_shard)
    log(f"mixing {plan.total} SFT samples from {len(targets)} (builder, language) groups into {n_shards} shard(s)")
    candidates = records.map_batches(mix_candidates, batch_format="pyarrow", **scan, fn_kwargs={
        "limits": mixing.candidate_limits(targets, plan.available), "seed": seed})
    selected = grouped(candidates, "group", blocks).map_groups(select_group, batch_format="pyarrow", **task, fn_kwargs={
        "targets": targets, "seed": seed, "num_shards": n_shards})
    return _collect(grouped(selected, "shard", blocks).map_groups(pack_and_write, batch_format="pyarrow", **task,
                                                                  fn_kwargs={"out_dir": str(staging),
                                                                             "max_seq_len": recipe.max_seq_len}))


def _write_dpo(records, recipe: PrepareRecipe, n_pairs: int, staging: Path, blocks: int, task: dict,
               scan: dict) -> list[dict]:
    n_shards = mixing.num_shards(n_pairs, recipe.shards.num_shards, recipe.shards.samples_per_shard)
    pairs = records.map_batches(place_pairs, fn_kwargs={"seed": recipe.mixing.seed, "num_shards": n_shards},
                                batch_format="pyarrow", **scan)
    return _collect(grouped(pairs, "shard", blocks).map_groups(write_pairs, fn_kwargs={"out_dir": str(staging)},
                                                               batch_format="pyarrow", **task))


def _run_concurrently(jobs: dict[str, Callable[[], list[dict]]], timings: dict) -> dict[str, list[dict]]:
    """The three writers read the same materialized records and write disjoint files: run as concurrent Ray Data
    executions, their shuffles' scheduling rounds overlap instead of adding up (each is a few small tasks)."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(name: str, job: Callable[[], list[dict]]) -> list[dict]:
        t = time.time()
        out = job()
        timings[name] = round(time.time() - t, 3)
        return out

    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="xalign-writer") as pool:
        futures = {name: pool.submit(timed, name, job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@dataclass
class Inputs:
    """What the driver learns before any cluster work: bad inputs and recipes fail here, without Ray."""

    model_path: Path
    tokenizer: dict
    infos: dict[str, inventory.SourceInfo]
    files: list[inventory.InputFile]
    units: list
    seconds: float


def check_inputs(recipe: PrepareRecipe) -> Inputs:
    """Resolve the tokenizer, hash and validate every input file (encoding, alignment, emptiness), plan units."""
    t0 = time.time()
    model_path = resolve_model(recipe.model)
    tokenizer = tokenization.tokenizer_identity(model_path)
    infos = inventory.scan(recipe)
    units = plan_units(recipe, infos)
    return Inputs(model_path, tokenizer, infos, inventory.input_files(infos), units, time.time() - t0)


def run_prepare(recipe: PrepareRecipe, address: str | None = None, log: Log | None = None) -> Path:
    """Build the dataset; returns `<output_dir>/<name>-<dataset_id[:12]>/`."""
    log = log or (lambda msg: None)
    inputs = check_inputs(recipe)
    started = time.time()
    with ray_session(address) as addr:
        return _run(recipe, inputs, addr, log, ray_start=time.time() - started)


def _run(recipe: PrepareRecipe, inputs: Inputs, address: str, log: Log, ray_start: float) -> Path:
    import ray
    from ray.data import ActorPoolStrategy

    t0 = time.time() - inputs.seconds - ray_start
    timings = {"check_inputs": round(inputs.seconds, 3), "ray_start": round(ray_start, 3)}

    def lap(name: str, since: float) -> float:
        now = time.time()
        timings[name] = round(now - since, 3)
        return now

    model_path, tokenizer, files, units = inputs.model_path, inputs.tokenizer, inputs.files, inputs.units
    ctx = BuildContext(recipe, inputs.infos)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    actors = tokenize_pool_size(recipe.ray, cpus, log)
    blocks = recipe.ray.shuffle_blocks or max(2, 2 * math.ceil(cpus))
    log(f"{len(files)} input files, {len(units)} work units, {actors} tokenizer actors on {cpus:g} CPUs")
    t = time.time()

    staging = output.staging_dir(recipe)
    task = {"num_cpus": recipe.ray.task_cpus}
    try:
        with data_context(recipe.ray):
            records = ray.data.from_items([u.as_item() for u in units], override_num_blocks=len(units))
            records = records.map_batches(build_and_filter, fn_kwargs={"ctx": ctx}, batch_size=1,
                                          batch_format="pyarrow", **task)
            if recipe.filters.dedup.exact or recipe.filters.dedup.near:  # else nothing needs a group's rows together
                records = grouped(records, "group", blocks).map_groups(dedup_by_language, fn_kwargs={"ctx": ctx},
                                                              batch_format="pyarrow", **task)
            records = records.map_batches(
                tokenization.TokenizeStage, fn_constructor_kwargs={"model_path": str(model_path),
                                                                   "max_seq_len": recipe.max_seq_len,
                                                                   "rows_per_call": recipe.ray.batch_size},
                batch_size=None, batch_format="pyarrow", compute=ActorPoolStrategy(size=actors),
                num_cpus=recipe.ray.actor_cpus,
            ).materialize()
            t = lap("build_filter_dedup_tokenize", t)
            # Each later pass bundles the unit-sized blocks into `blocks` batches: a few tasks per pass, and no
            # repartition barrier after the actors (it cost one small task per block at the very end).
            scan = {**task, "batch_size": max(1, math.ceil(records.count() / blocks))}

            counts: Counter = Counter()
            for row in records.map_batches(count_block, batch_format="pyarrow", **scan).take_all():
                counts.update(stats.decode_counts(row["stats"]))
            n_rejected = sum(n for k, n in counts.items() if k[3] != stats.KEPT)
            log(f"{sum(counts.values())} records built, {n_rejected} rejected")

            t = lap("counts", t)

            plan = None
            if recipe.sft_builders():
                plan = mixing.plan(stats.available(counts, "sft"), recipe.mixing, recipe.sft_builders())
            n_pairs = sum(n for k, n in counts.items() if k[0] == "dpo" and k[3] == stats.KEPT)
            writers: dict[str, Callable[[], list[dict]]] = {}
            if n_rejected:
                writers["rejects"] = partial(_write_rejects, records, staging, blocks, task, scan)
            if plan:
                writers["mix_pack_write_sft"] = partial(_write_sft, records, recipe, plan, staging, blocks, task, scan,
                                                        log)
            if n_pairs:
                writers["write_dpo"] = partial(_write_dpo, records, recipe, n_pairs, staging, blocks, task, scan)
            written = _run_concurrently(writers, timings)
            reject_stats, sft_stats, dpo_stats = (written.get(k, []) for k in ("rejects", "mix_pack_write_sft",
                                                                               "write_dpo"))
            t = lap("write_outputs", t)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        input_error = _unwrap_input_error(exc)
        if input_error is not None:
            raise input_error from None
        raise

    sft_entries = output.renumber(staging, sft_stats, "sft")
    dpo_entries = output.renumber(staging, dpo_stats, "dpo")
    body = output.assemble(recipe, tokenizer, files, counts, plan, sft_stats, dpo_stats, sft_entries, dpo_entries,
                           reject_stats)
    elapsed = time.time() - t0
    built = sum(counts.values())
    run_info = {
        "engine": "ray-data", "address": address, "cluster_cpus": cpus, "tokenize_actors": actors,
        "elapsed_s": round(elapsed, 3), "stage_s": timings, "records_built": built,
        "records_per_s": round(built / elapsed, 1) if elapsed else None,
    }
    final = output.finalize(recipe, staging, body, run_info)
    log(f"dataset {final.name} written in {elapsed:.1f}s")
    return final
