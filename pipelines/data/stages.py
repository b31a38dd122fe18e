"""The pipeline's stages: small declared objects over Arrow tables, run alike by both executors.

A `Stage` names its function, the validated settings passed to it as keyword arguments, and how Ray should
run it (a group-wise key, task or actor, batching). `pipeline` declares the ordered lists; `prepare` runs
them on Ray Data and `reference` in one process, so the two cannot differ in what they compute. Every
function's result is independent of how its input is split into calls (blocks, groups), which is what lets
the same lists give the same bytes on any cluster or none.

Functions are module level: their names label Ray Data's progress bars.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data import mixing, shards, stats
from pipelines.data.builders import build_unit
from pipelines.data.builders.context import BuildContext
from pipelines.data.filters import apply_record_filters, dedup
from pipelines.data.recipe import DedupFilter
from pipelines.data.schema import PAIR_SCHEMA, RECORD_SCHEMA, RL_PLACED_SCHEMA, STATS_SCHEMA, from_table, to_table

# How a map stage's input is cut into calls on Ray (in one process every call gets the whole table):
#   unit   one row per call: a work unit, whose build is the slow part
#   block  whole blocks: the tokenizer actors, which Ray Data fuses with the build stage when no shuffle
#          separates them (a row batch size would then count units, and one actor would get everything)
#   bundle a few calls per pass over the materialized records (rows / ray.shuffle_blocks each)
Batching = Literal["unit", "block", "bundle"]


class Args(BaseModel):
    """A stage's settings, validated when the stage list is declared; its fields are the function's keyword
    arguments (the constructor's, for an actor stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def kwargs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}  # as given, not model_dump'ed


@dataclass(frozen=True)
class Stage:
    """One step: `fn(table, **args) -> table`, or for an actor stage a class with `fn(**args)(table) -> table`.

    A stage with a `key` is group-wise: all rows sharing the key's value reach one call (Ray coalesces the
    blocks before the shuffle); its `schema` is that of its output, what it gives when there are no groups."""

    name: str
    fn: Callable[..., Any]
    args: Args | None = None
    key: str | None = None
    actor: bool = False
    batching: Batching = "bundle"
    schema: pa.Schema | None = None

    def __post_init__(self) -> None:
        if self.actor and (self.key is not None or not isinstance(self.fn, type)):
            raise ValueError(f"stage {self.name}: an actor stage is a class and maps blocks, not groups")
        if self.key is not None and self.schema is None:
            raise ValueError(f"stage {self.name}: a group-wise stage needs the schema of its output")

    def kwargs(self) -> dict[str, Any]:
        return self.args.kwargs() if self.args is not None else {}


# ---- settings ------------------------------------------------------------------------------------------

Positive = Annotated[int, Field(ge=1)]


class BuildArgs(Args):
    ctx: BuildContext


class DedupArgs(Args):
    cfg: DedupFilter


class TokenizeArgs(Args):
    model_path: str
    max_seq_len: Positive
    rows_per_call: Positive


class CandidateArgs(Args):
    limits: dict[str, Positive | None]  # (builder, language) group -> lowest-ranked rows kept per block
    seed: int


class SelectArgs(Args):
    targets: dict[str, Annotated[int, Field(ge=0)]]
    seed: int
    num_shards: Positive


class PlaceArgs(Args):
    seed: int
    num_shards: Positive


class WriteArgs(Args):
    out_dir: str


class PackArgs(WriteArgs):
    max_seq_len: Positive


# ---- records: build, filter, dedup (tokenizing is `tokenization.TokenizeStage`) --------------------------


def build_and_filter(batch: pa.Table, ctx: BuildContext) -> pa.Table:
    """Read and build each unit, then run the per-record filters and compute dedup signatures."""
    rows: list[dict] = []
    for unit in batch.to_pylist():
        built = apply_record_filters(build_unit(unit, ctx), ctx.recipe.filters)
        for row in built:
            row["group"] = dedup.group_key(row)
            # Consumed by the filters and signatures above; copies of the text that later stages never read.
            row["checks"] = row["dedup_text"] = None
        rows.extend(built)
    return to_table(rows, RECORD_SCHEMA)


def count_block(batch: pa.Table) -> pa.Table:
    return pa.table({"stats": [stats.encode_counts(stats.count_table(batch))]}, schema=STATS_SCHEMA)


# ---- writers: each returns one statistics row per file written ------------------------------------------


def keep_rejected(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch["reject_reason"]))


def write_rejects(group: pa.Table, out_dir: str) -> pa.Table:
    return stats_row(shards.write_rejects(from_table(group), out_dir))


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


def select(group: pa.Table, targets: dict[str, int], seed: int, num_shards: int) -> pa.Table:
    """One (builder, language) group's picks (`mixing.select_group`), each copy with its order key and shard."""
    return mixing.select_group(group, targets[group.column("group")[0].as_py()], seed, num_shards)


def pack_and_write(group: pa.Table, out_dir: str, max_seq_len: int) -> pa.Table:
    rows = from_table(group)
    return stats_row(shards.write_sft_shard(rows, out_dir, rows[0]["shard"], max_seq_len))


def _place(batch: pa.Table, kind: str, schema: pa.Schema, seed: int, num_shards: int) -> pa.Table:
    """Surviving records of `kind` with their seeded order key and shard (never mixed or packed)."""
    keep = pc.and_(pc.equal(batch["kind"], kind), pc.is_null(batch["reject_reason"]))
    rows = from_table(batch.filter(keep).select([n for n in schema.names if n not in ("order_key", "shard")]))
    for row in rows:
        row["order_key"], row["shard"] = shards.dpo_placement(row["sample_id"], seed, num_shards)
    return to_table(rows, schema)


def place_pairs(batch: pa.Table, seed: int, num_shards: int) -> pa.Table:
    """Surviving preference pairs with their order key and shard."""
    return _place(batch, "dpo", PAIR_SCHEMA, seed, num_shards)


def write_pairs(group: pa.Table, out_dir: str) -> pa.Table:
    rows = from_table(group)
    return stats_row(shards.write_dpo_shard(rows, out_dir, rows[0]["shard"]))


def place_rl(batch: pa.Table, seed: int, num_shards: int) -> pa.Table:
    """Surviving RL prompts with their order key and shard (a seeded shuffle)."""
    return _place(batch, "rl", RL_PLACED_SCHEMA, seed, num_shards)


def write_rl(group: pa.Table, out_dir: str) -> pa.Table:
    rows = from_table(group)
    return stats_row(shards.write_rl_shard(rows, out_dir, rows[0]["shard"]))


def stats_row(d: dict) -> pa.Table:
    return pa.table({"stats": [json.dumps(d, sort_keys=True)]}, schema=STATS_SCHEMA)
