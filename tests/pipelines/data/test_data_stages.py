"""The declared stage lists both executors run: validated settings, the Ray hints the pipeline's speed rests on,
and the in-process executor's group-wise calls (one per key value, all of its rows)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from cluster.config import validate
from pipelines.data import pipeline, stages
from pipelines.data.context import Inputs, RunContext
from pipelines.data.recipe import PrepareRecipe
from pipelines.data.reference import LocalExecutor, split_by
from pipelines.data.schema import STATS_SCHEMA


def test_stage_settings_are_validated_and_name_the_field():
    with pytest.raises(ValidationError, match="num_shards"):
        stages.SelectArgs(targets={"translation\tdeu_Latn": 3}, seed=0, num_shards=0)
    with pytest.raises(ValidationError, match="rows_per_call"):
        stages.TokenizeArgs(model_path="m", max_seq_len=64, rows_per_call="many")
    with pytest.raises(ValueError, match="stage select: a group-wise stage needs the schema"):
        stages.Stage("select", stages.select, key="group")
    args = stages.PlaceArgs(seed=3, num_shards=2)
    assert args.kwargs() == {"seed": 3, "num_shards": 2}


def _context(small_recipe, tmp_path: Path, filters: dict | None = None) -> RunContext:
    recipe = validate(PrepareRecipe, {**small_recipe("unused", str(tmp_path)), "filters": filters or {}})
    return RunContext(recipe, Inputs(tmp_path / "model", {}, {}, [], [], 0.0), tmp_path)


def test_record_stages_keep_the_ray_hints(small_recipe, tmp_path):
    """Build one unit per call, dedup group-wise by (builder, language), tokenize in actors over whole blocks;
    without dedup no group-wise stage separates build from tokenize (Ray Data fuses the two)."""
    with_dedup = pipeline.record_stages(_context(small_recipe, tmp_path))
    assert [(s.name, s.actor, s.key or s.batching) for s in with_dedup] == [
        ("build_and_filter", False, "unit"), ("dedup", False, "group"), ("tokenize", True, "block")]
    assert with_dedup[2].kwargs()["rows_per_call"] == 256
    no_dedup = pipeline.record_stages(_context(small_recipe, tmp_path,
                                               filters={"dedup": {"exact": False, "near": False}}))
    assert [s.name for s in no_dedup] == ["build_and_filter", "tokenize"]


def test_local_executor_calls_a_group_wise_stage_once_per_key_with_all_its_rows():
    table = pa.table({"k": ["b", "a", "b", "c", "a", "b"], "v": [1, 2, 3, 4, 5, 6]})
    assert [g.to_pydict() for g in split_by(table, "k")] == [
        {"k": ["a", "a"], "v": [2, 5]}, {"k": ["b", "b", "b"], "v": [1, 3, 6]}, {"k": ["c"], "v": [4]}]

    def summarize(group: pa.Table, scale: int) -> pa.Table:
        return stages.stats_row({"key": group["k"][0].as_py(), "total": scale * sum(group["v"].to_pylist())})

    class Scale(stages.Args):
        scale: int

    stage = stages.Stage("summarize", summarize, Scale(scale=10), key="k", schema=STATS_SCHEMA)
    ex = LocalExecutor()
    assert ex.collect(ex.run(table, [stage])) == ['{"key": "a", "total": 70}', '{"key": "b", "total": 100}',
                                                 '{"key": "c", "total": 40}']
    assert ex.run(table.slice(0, 0), [stage]).schema == STATS_SCHEMA  # no groups: an empty result, typed
