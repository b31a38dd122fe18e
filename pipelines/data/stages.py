"""The pipeline's transforms on plain rows, shared by the Ray Data pipeline (`prepare`) and the
single-process reference (`reference`), so both produce the same bytes.
"""

from __future__ import annotations

from pipelines.data import mixing, shards
from pipelines.data.builders import build_unit
from pipelines.data.builders.context import BuildContext
from pipelines.data.filters import apply_record_filters, dedup
from pipelines.data.schema import is_kept


def build_and_filter(unit: dict, ctx: BuildContext) -> list[dict]:
    """Read and build one unit, then run the per-record filters and compute dedup signatures."""
    rows = apply_record_filters(build_unit(unit, ctx), ctx.recipe.filters)
    for row in rows:
        row["group"] = dedup.group_key(row)
        # Consumed by the filters and signatures above; copies of the text that later stages never read.
        row["checks"] = row["dedup_text"] = None
    return rows


def mixable(rows: list[dict], targets: dict[str, int]) -> list[dict]:
    """Surviving SFT rows of the groups the mixture draws from, keyed by (builder, language)."""
    out = []
    for row in rows:
        if row["kind"] == "sft" and is_kept(row):
            row["group"] = mixing.group_key(row["builder"], row["lang"])
            if targets.get(row["group"], 0) > 0:
                out.append(row)
    return out


def select(rows: list[dict], targets: dict[str, int], seed: int, num_shards: int) -> list[dict]:
    """One (builder, language) group's picks, each with its order key and shard."""
    if not rows:
        return []
    return mixing.select_group(rows, targets[rows[0]["group"]], seed, num_shards)


def pairs(rows: list[dict], seed: int, num_shards: int) -> list[dict]:
    """Surviving preference pairs with their order key and shard."""
    out = []
    for row in rows:
        if row["kind"] == "dpo" and is_kept(row):
            key, shard = shards.dpo_placement(row["sample_id"], seed, num_shards)
            out.append({
                "sample_id": row["sample_id"], "builder": row["builder"], "lang": row["lang"],
                "src_lang": row["src_lang"], "pref_reason": row["pref_reason"], "rejected_lang": row["rejected_lang"],
                "detail": row["detail"], "order_key": key, "shard": shard, "prompt_ids": row["prompt_ids"],
                "chosen_ids": row["chosen_ids"], "rejected_ids": row["rejected_ids"],
            })
    return out


def rejected(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not is_kept(r)]
