"""`run_prepare`: the declared pipeline (`pipeline`) on Ray Data, on an embedded cluster or the one `address` names.

`RayExecutor` turns each `Stage` into one Ray Data operator and keeps the choices that made it scale
(docs/ARCHITECTURE.md, "The data pipeline on Ray"):

- every group-wise stage coalesces to `ray.shuffle_blocks` blocks before its shuffle (`grouped`), and
  shuffles use Ray's task-based sort shuffle, which needs no long-lived aggregator actors;
- the tokenizer is an actor pool taking whole blocks, sized to leave at least one CPU to the tasks (the Ray
  Data/Train CPU deadlock in ../shared/STACK.md); every task asks for `ray.task_cpus`;
- passes over the materialized records bundle its blocks into `ray.shuffle_blocks` calls;
- the writer branches run as concurrent Ray Data executions over the same materialized records.

The driver holds only the plan, counts and per-file statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.ray_session import ray_session
from pipelines.data.context import Inputs, check_inputs
from pipelines.data.pipeline import Log, build_dataset
from pipelines.data.readers import InputError
from pipelines.data.recipe import PrepareRecipe, RayExecution
from pipelines.data.stages import Stage


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


def tokenize_pool_size(cfg: RayExecution, cluster_cpus: float, log: Log, nodes: int = 1) -> int:
    """Actors that fit while leaving at least one CPU (or half of a tiny cluster) to the tasks.

    On several nodes that CPU must be whole on one node: the shuffle's split tasks ask for 1 CPU each, and
    actors spread so that every node keeps a fraction (0.5 + 0.5 + 0.5 free of 3 one-CPU nodes) leave them
    pending forever. Reserving what the worst spread can strand on every node but one, plus the CPU, rules
    that out."""
    stranded = (nodes - 1) * max(0.0, 1.0 - cfg.actor_cpus) if cfg.actor_cpus < 1 else 0.0
    room = max(cfg.actor_cpus, cluster_cpus - min(1.0, cluster_cpus / 2) - stranded)
    fit = max(1, math.floor(room / cfg.actor_cpus + 1e-9))
    want = cfg.tokenize_actors or min(8, fit)
    if want > fit:
        log(f"ray.tokenize_actors={want} would starve the other stages on {cluster_cpus:g} CPUs; using {fit}")
    return min(want, fit)


@dataclass
class RayExecutor:
    """Runs stage lists as Ray Data operators on the connected cluster."""

    cfg: RayExecution
    actors: int  # tokenizer actor pool size
    blocks: int  # blocks before every shuffle, and calls per pass over the materialized records
    info: dict[str, Any] = field(default_factory=dict)
    bundle: int | None = None  # rows per call of a "bundle" stage: set when the records are materialized

    def source(self, items: list[dict]):
        import ray

        return ray.data.from_items(items, override_num_blocks=len(items))

    def run(self, ds, stage_list: list[Stage]):
        for stage in stage_list:
            ds = self._apply(ds, stage)
        return ds

    def _apply(self, ds, stage: Stage):
        from ray.data import ActorPoolStrategy

        kwargs = stage.kwargs() or None
        if stage.key is not None:
            return grouped(ds, stage.key, self.blocks).map_groups(
                stage.fn, fn_kwargs=kwargs, batch_format="pyarrow", num_cpus=self.cfg.task_cpus)
        if stage.actor:
            return ds.map_batches(stage.fn, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="pyarrow",
                                  compute=ActorPoolStrategy(size=self.actors), num_cpus=self.cfg.actor_cpus)
        if stage.batching == "bundle" and self.bundle is None:
            raise RuntimeError(f"stage {stage.name}: a bundle stage runs over materialized records only")
        batch_size = {"unit": 1, "block": None, "bundle": self.bundle}[stage.batching]
        return ds.map_batches(stage.fn, fn_kwargs=kwargs, batch_size=batch_size, batch_format="pyarrow",
                              num_cpus=self.cfg.task_cpus)

    def materialize(self, ds):
        """Into the object store, not the driver; the records are stored as the tokenizer's output blocks, and
        each later pass bundles them into `blocks` batches: a few tasks per pass, and no repartition barrier
        after the actors (it cost one small task per block at the very end)."""
        ds = ds.materialize()
        self.bundle = max(1, math.ceil(ds.count() / self.blocks))
        return ds

    def collect(self, ds) -> list[str]:
        return [row["stats"] for row in ds.take_all()]

    def run_branches(self, jobs: dict[str, Callable[[], list[str]]]) -> dict[str, list[str]]:
        """The writers read the same materialized records and write disjoint files: run as concurrent Ray Data
        executions, their shuffles' scheduling rounds overlap instead of adding up (each is a few small tasks)."""
        if not jobs:
            return {}
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="xalign-writer") as pool:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            return {name: f.result() for name, f in futures.items()}


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


def run_prepare(recipe: PrepareRecipe, address: str | None = None, log: Log | None = None) -> Path | str:
    """Build the dataset; returns `<output_dir>/<name>-<dataset_id[:12]>/`."""
    log = log or (lambda msg: None)
    started = time.time()
    recipe = recipe.model_copy(update={"output_dir": storage.located(recipe.output_dir)})
    inputs = check_inputs(recipe)
    t = time.time()
    with ray_session(address) as addr:
        return _run(recipe, inputs, addr, log, started, ray_start=time.time() - t)


def _run(recipe: PrepareRecipe, inputs: Inputs, address: str, log: Log, started: float,
         ray_start: float) -> Path | str:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    nodes = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)
    actors = tokenize_pool_size(recipe.ray, cpus, log, nodes=nodes)
    blocks = recipe.ray.shuffle_blocks or max(2, 2 * math.ceil(cpus))
    log(f"{len(inputs.files)} input files, {len(inputs.units)} work units, {actors} tokenizer actors on {cpus:g} CPUs")
    ex = RayExecutor(recipe.ray, actors, blocks, info={
        "engine": "ray-data", "address": address, "cluster_cpus": cpus, "tokenize_actors": actors})
    timings = {"check_inputs": round(inputs.seconds, 3), "ray_start": round(ray_start, 3)}
    try:
        with data_context(recipe.ray):
            return build_dataset(recipe, inputs, ex, started, timings, log)
    except Exception as exc:
        input_error = _unwrap_input_error(exc)
        if input_error is not None:
            raise input_error from None
        raise
