"""Tokenize with `cluster.prompts` (the chat template serving and evaluation use), in Ray actors.

SFT rows get `input_ids` and `labels` (-100 on every prompt token); preference rows get `prompt_ids` (the
prompt plus the opening of the model's turn) and `chosen_ids`/`rejected_ids` (the answer tokens with the
END marker); RL rows get `prompt_ids` only, with the reference's length as an answer (`reference_tokens`).
Rows longer than `max_seq_len` (for RL: the prompt plus the reference, what a rollout about as long as the
reference needs) are rejected (`too_long_tokens`), never truncated.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from cluster import prompts
from cluster.tokenizer import load_tokenizer
from pipelines.data import schema
from pipelines.data.schema import is_kept, reject


def _ids(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


def answer_ids(tok, prompt_msgs: list[dict], answer: str, prompt_ids: list[int]) -> list[int]:
    """The answer's tokens as the chat template renders them after `prompt_ids` (END marker included)."""
    ids, labels = prompts.encode(tok, [*prompt_msgs, {"role": "assistant", "content": answer}])
    if ids[: len(prompt_ids)] != prompt_ids:
        raise AssertionError("prompt tokens differ between the generation prompt and the full conversation")
    return [i for i, lab in zip(ids, labels) if lab != -100]


def tokenize_rows(tok, rows: list[dict], max_seq_len: int) -> list[dict]:
    for row in rows:
        row["minhash"] = None  # served its purpose in dedup; keeps materialized blocks small
        if not is_kept(row):
            continue
        msgs = json.loads(row["messages"])
        if row["kind"] == "sft":
            ids, labels = prompts.encode(tok, msgs)
            row["num_tokens"] = len(ids)
            if len(ids) > max_seq_len:
                reject(row, "too_long_tokens", "tokenize", f"{len(ids)} tokens > max_seq_len {max_seq_len}")
                continue
            row["input_ids"], row["labels"] = _ids(ids), _ids(labels)
        elif row["kind"] == "rl":
            prompt_ids = prompts.encode_prompt(tok, msgs)
            reference = answer_ids(tok, msgs, row["reference"], prompt_ids)
            row["num_tokens"], row["reference_tokens"] = len(prompt_ids), len(reference)
            if len(prompt_ids) + len(reference) > max_seq_len:
                reject(row, "too_long_tokens", "tokenize", f"prompt {len(prompt_ids)} + reference {len(reference)} "
                       f"tokens > max_seq_len {max_seq_len}")
                continue
            row["prompt_ids"] = _ids(prompt_ids)
        else:
            prompt_ids = prompts.encode_prompt(tok, msgs)
            chosen = answer_ids(tok, msgs, row["chosen"], prompt_ids)
            rejected = answer_ids(tok, msgs, row["rejected"], prompt_ids)
            longest = len(prompt_ids) + max(len(chosen), len(rejected))
            row["num_tokens"] = longest
            if longest > max_seq_len:
                reject(row, "too_long_tokens", "tokenize", f"{longest} tokens > max_seq_len {max_seq_len}")
                continue
            row["prompt_ids"], row["chosen_ids"], row["rejected_ids"] = _ids(prompt_ids), _ids(chosen), _ids(rejected)
    return rows


READS = ("kind", "messages", "chosen", "rejected", "reference", "reject_reason", "reject_stage", "reject_detail")
WRITES = ("reject_reason", "reject_stage", "reject_detail", "minhash", "input_ids", "labels", "prompt_ids",
          "chosen_ids", "rejected_ids", "num_tokens", "reference_tokens")


def tokenize_table(tok, table: pa.Table, max_seq_len: int) -> pa.Table:
    """`tokenize_rows` on an Arrow batch, moving only the columns it reads and writes."""
    return schema.on_columns(table, READS, WRITES, lambda rows: tokenize_rows(tok, rows, max_seq_len))


class TokenizeStage:
    """Ray Data actor: loads the tokenizer once, then tokenizes whole blocks, `rows_per_call` rows at a time.

    It takes whole blocks (map_batches with batch_size=None) because Ray Data fuses the build stage into this
    actor when no shuffle separates them, and a row batch size would then count work units, not records:
    256 units would make one batch of everything, run by one actor."""

    def __init__(self, model_path: str, max_seq_len: int, rows_per_call: int) -> None:
        self.tok = load_tokenizer(model_path)
        self.max_seq_len = max_seq_len
        self.rows_per_call = rows_per_call

    def __call__(self, block: pa.Table) -> pa.Table:
        n, step = block.num_rows, self.rows_per_call
        parts = [tokenize_table(self.tok, block.slice(i, step), self.max_seq_len) for i in range(0, n, step)]
        return pa.concat_tables(parts) if parts else block
