"""The declared pipeline (`pipeline`) in one process, without Ray: the benchmark's baseline and the tests' oracle.

`LocalExecutor` runs the same stage lists as `prepare.RayExecutor`, each stage once over the whole table
(a group-wise stage once per key value), so every row is held in memory (that is the point of the
comparison). It must produce the same dataset id as `prepare.run_prepare` for the same recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data.context import check_inputs
from pipelines.data.pipeline import Log, build_dataset
from pipelines.data.recipe import PrepareRecipe
from pipelines.data.stages import Stage


def split_by(table: pa.Table, key: str) -> list[pa.Table]:
    """The rows of each value of `key`, in key order (rows keep their order within a group)."""
    table = table.take(pc.sort_indices(table, [(key, "ascending")]))  # a stable sort
    keys = table.column(key).to_pylist()
    bounds = [0, *(i for i in range(1, len(keys)) if keys[i] != keys[i - 1]), len(keys)] if keys else []
    return [table.slice(a, b - a) for a, b in pairwise(bounds)]


@dataclass
class LocalExecutor:
    """Runs stage lists over Arrow tables in this process; branches run one after another."""

    info: dict[str, Any] = field(default_factory=lambda: {"engine": "single-process"})

    def source(self, items: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(items)

    def run(self, table: pa.Table, stage_list: list[Stage]) -> pa.Table:
        for stage in stage_list:
            table = self._apply(table, stage)
        return table

    def _apply(self, table: pa.Table, stage: Stage) -> pa.Table:
        if stage.actor:
            return stage.fn(**stage.kwargs())(table)
        if stage.key is None:
            return stage.fn(table, **stage.kwargs())
        parts = [stage.fn(group, **stage.kwargs()) for group in split_by(table, stage.key)]
        return pa.concat_tables(parts) if parts else stage.schema.empty_table()

    def materialize(self, table: pa.Table) -> pa.Table:
        return table

    def collect(self, table: pa.Table) -> list[str]:
        return table.column("stats").to_pylist()

    def run_branches(self, jobs: dict[str, Callable[[], list[str]]]) -> dict[str, list[str]]:
        return {name: job() for name, job in jobs.items()}


def run_reference(recipe: PrepareRecipe, log: Log | None = None) -> Path:
    """Build the dataset in this process; returns `<output_dir>/<name>-<dataset_id[:12]>/`."""
    started = time.time()
    inputs = check_inputs(recipe)
    timings = {"check_inputs": round(inputs.seconds, 3)}
    return build_dataset(recipe, inputs, LocalExecutor(), started, timings, log or (lambda msg: None))
