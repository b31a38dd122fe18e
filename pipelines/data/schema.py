"""Arrow schemas of the pipeline's rows and outputs, fixed so every block and shard has the same types.

One row type flows from the builders to the tokenizer (columns are filled stage by stage; a rejected row
keeps flowing with its reason, so nothing is dropped silently). Conversations travel as JSON text: exact,
compact, and the same bytes in every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa

IDS = pa.list_(pa.int32())

RECORD_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("kind", pa.string()),  # "sft", "dpo" or "rl"
    ("builder", pa.string()),
    ("source", pa.string()),
    ("source_file", pa.string()),
    ("source_index", pa.int64()),  # line (1-based) or item index (0-based) in source_file
    ("lang", pa.string()),  # Flores code of the answer: the unit of dedup and temperature sampling
    ("src_lang", pa.string()),
    ("messages", pa.string()),  # JSON: the conversation (sft) or the prompt turns (dpo, rl)
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("pref_reason", pa.string()),  # why `rejected` is worse: off_target | degraded | a preference file's label
    ("rejected_lang", pa.string()),
    ("reference", pa.string()),  # rl: the reference translation rewards compare with
    ("source_text", pa.string()),  # rl: the text the prompt asks to translate
    ("detail", pa.string()),  # builder notes: template index, follow-up kinds, how a rejected answer was made
    ("checks", pa.string()),  # JSON [[field, lang, text], ...]: what the filters look at
    ("dedup_text", pa.string()),
    ("group", pa.string()),  # the key of the next group-wise stage (dedup: builder:lang)
    ("exact_hash", pa.string()),
    ("minhash", pa.list_(pa.uint32())),
    ("reject_reason", pa.string()),
    ("reject_stage", pa.string()),
    ("reject_detail", pa.string()),
    ("input_ids", IDS),
    ("labels", IDS),
    ("prompt_ids", IDS),
    ("chosen_ids", IDS),
    ("rejected_ids", IDS),
    ("num_tokens", pa.int32()),
    ("reference_tokens", pa.int32()),  # rl: the reference's tokens as an answer (END marker included)
])

# An SFT sample picked by mixing (one row per copy), on its way to its shard.
SELECTED_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("builder", pa.string()),
    ("lang", pa.string()),
    ("order_key", pa.int64()),
    ("shard", pa.int32()),
    ("input_ids", IDS),
    ("labels", IDS),
    ("num_tokens", pa.int32()),
])

# A preference pair on its way to its shard.
PAIR_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("builder", pa.string()),
    ("lang", pa.string()),
    ("src_lang", pa.string()),
    ("pref_reason", pa.string()),
    ("rejected_lang", pa.string()),
    ("reference", pa.string()),  # rl: the reference translation rewards compare with
    ("source_text", pa.string()),  # rl: the text the prompt asks to translate
    ("detail", pa.string()),
    ("order_key", pa.int64()),
    ("shard", pa.int32()),
    ("prompt_ids", IDS),
    ("chosen_ids", IDS),
    ("rejected_ids", IDS),
])

# An RL prompt on its way to its shard.
RL_PLACED_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("lang", pa.string()),
    ("src_lang", pa.string()),
    ("reference", pa.string()),
    ("source_text", pa.string()),
    ("order_key", pa.int64()),
    ("shard", pa.int32()),
    ("prompt_ids", IDS),
    ("num_tokens", pa.int32()),
    ("reference_tokens", pa.int32()),
])

# Statistics a writer task sends back to the driver (one small row per file).
STATS_SCHEMA = pa.schema([("stats", pa.string())])

SFT_SCHEMA = pa.schema([
    ("input_ids", IDS),
    ("labels", IDS),
    ("position_ids", IDS),
    ("sample_ids", pa.list_(pa.string())),
    ("num_tokens", pa.int32()),
    ("num_samples", pa.int32()),
])

DPO_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("lang", pa.string()),
    ("reason", pa.string()),
    ("prompt_ids", IDS),
    ("chosen_ids", IDS),
    ("rejected_ids", IDS),
    ("builder", pa.string()),
    ("src_lang", pa.string()),
    ("rejected_lang", pa.string()),
    ("reference", pa.string()),  # rl: the reference translation rewards compare with
    ("source_text", pa.string()),  # rl: the text the prompt asks to translate
    ("detail", pa.string()),
])

# The RL split (`rl/`): one prompt per row, ids as `cluster.prompts.encode_prompt` makes them (ending with the
# opening of the model's turn), so the policy generates from exactly what serving would send it.
RL_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("prompt_ids", IDS),
    ("reference", pa.string()),
    ("source_text", pa.string()),
    ("src_lang", pa.string()),  # Flores code
    ("tgt_lang", pa.string()),  # Flores code
    ("num_tokens", pa.int32()),  # len(prompt_ids)
    ("reference_tokens", pa.int32()),  # the reference's length as an answer: a guide for max new tokens
])

REJECT_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("reason", pa.string()),
    ("stage", pa.string()),
    ("detail", pa.string()),
    ("builder", pa.string()),
    ("source", pa.string()),
    ("source_file", pa.string()),
    ("source_index", pa.int64()),
    ("lang", pa.string()),
    ("record", pa.string()),  # JSON: messages, chosen, rejected as built
])

_FIELDS = RECORD_SCHEMA.names


def new_record(**fields: Any) -> dict[str, Any]:
    """A row with every column present; messages and checks are serialized here."""
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    row = dict.fromkeys(_FIELDS)
    row.update(fields)
    for key in ("messages", "checks"):
        if row[key] is not None and not isinstance(row[key], str):
            row[key] = json.dumps(row[key], ensure_ascii=False)
    return row


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = RECORD_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def on_columns(table: pa.Table, reads: Sequence[str], writes: Sequence[str],
               fn: Callable[[list[dict[str, Any]]], object]) -> pa.Table:
    """Run a row function on record columns: only `reads` cross into Python (columns in `writes` but not in
    `reads` start as None), and only `writes` are replaced. A whole-record to_pylist/from_pylist round trip
    costs more than the group-wise and tokenizer stages' own work."""
    rows = table.select(list(reads)).to_pylist()
    for r in rows:
        for name in writes:
            r.setdefault(name, None)
    fn(rows)
    for name in writes:
        field = RECORD_SCHEMA.field(name)
        table = table.set_column(table.schema.get_field_index(name), field,
                                 pa.array([r[name] for r in rows], type=field.type))
    return table


def reject(row: dict[str, Any], reason: str, stage: str, detail: str | None = None) -> dict[str, Any]:
    row["reject_reason"], row["reject_stage"], row["reject_detail"] = reason, stage, detail
    return row


def is_kept(row: dict[str, Any]) -> bool:
    return row["reject_reason"] is None
