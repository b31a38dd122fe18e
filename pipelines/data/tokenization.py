"""Tokenize with `pipelines.prompts` (the chat template serving and evaluation use), in Ray actors.

SFT rows get `input_ids` and `labels` (-100 on every prompt token); preference rows get `prompt_ids` (the
prompt plus the opening of the model's turn) and `chosen_ids`/`rejected_ids` (the answer tokens with the
END marker). Rows longer than `max_seq_len` are rejected (`too_long_tokens`), never truncated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import prompts
from pipelines.data import schema
from pipelines.data.schema import is_kept, reject

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model")


class SegmentEncoder:
    """The model's `tokenizer.json` through `tokenizers` alone: the ids transformers' fast tokenizer gives for
    `encode(text, add_special_tokens=False)` (tested on many scripts), without its import (~10 s in every
    tokenizer actor) and per-call wrapping (about as long as the encoding itself)."""

    def __init__(self, raw, bos_token: str | None) -> None:
        self.raw = raw  # tokenizers.Tokenizer
        self.bos_token = bos_token
        self.bos_token_id = raw.token_to_id(bos_token) if bos_token else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if add_special_tokens:
            raise ValueError("SegmentEncoder encodes segments only: prompts.encode adds the BOS itself")
        return self.raw.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.raw.decode(list(ids), skip_special_tokens=False)


def _check_markers(folder: Path, one_token) -> None:
    for marker in prompts.SPECIAL_TOKENS:
        if not one_token(marker):
            raise ValueError(
                f"tokenizer of {folder} does not have {marker!r} as one token: use a model prepared by "
                "xalign (cluster.models.resolve_model / attach_chat_template)"
            )


def _bos_token(folder: Path) -> str | None:
    cfg_file = folder / "tokenizer_config.json"
    bos = json.loads(cfg_file.read_text()).get("bos_token") if cfg_file.is_file() else None
    return bos.get("content") if isinstance(bos, dict) else bos


def load_tokenizer(model_path: str | Path):
    """What the pipeline tokenizes with: a `SegmentEncoder` when the model has a `tokenizer.json`, else
    the transformers tokenizer."""
    folder = Path(model_path)
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
        _check_markers(folder, lambda m: len(raw.encode(m, add_special_tokens=False).ids) == 1)
        return SegmentEncoder(raw, _bos_token(folder))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    _check_markers(folder, lambda m: len(tok.encode(m, add_special_tokens=False)) == 1)
    return tok


def _fast_identity(folder: Path) -> tuple[int, int | None, int | None]:
    """(vocabulary size, bos id, END id) from tokenizer.json with `tokenizers` alone: ~5x quicker than
    transformers for Gemma's 262k vocabulary, and the driver only needs these numbers and the marker check."""
    enc = load_tokenizer(folder)
    return enc.raw.get_vocab_size(with_added_tokens=True), enc.bos_token_id, enc.raw.token_to_id(prompts.END)


def tokenizer_identity(model_path: str | Path) -> dict:
    """What the token ids depend on: the tokenizer files' hash, vocabulary size and marker ids."""
    folder = Path(model_path)
    h = hashlib.sha256()
    files = []
    for name in TOKENIZER_FILES:
        f = folder / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
            files.append(name)
    if (folder / "tokenizer.json").is_file():
        vocab, bos_id, end_id = _fast_identity(folder)
    else:
        tok = load_tokenizer(folder)
        vocab, bos_id, end_id = len(tok), tok.bos_token_id, tok.convert_tokens_to_ids(prompts.END)
    marker = folder / "xalign_model.json"
    return {
        "name": json.loads(marker.read_text()).get("name") if marker.is_file() else folder.name,
        "tokenizer_sha256": h.hexdigest(),
        "files": files,
        "vocab_size": vocab,
        "bos_token_id": bos_id,
        "end_of_turn_id": end_id,
    }


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


READS = ("kind", "messages", "chosen", "rejected", "reject_reason", "reject_stage", "reject_detail")
WRITES = ("reject_reason", "reject_stage", "reject_detail", "minhash", "input_ids", "labels", "prompt_ids",
          "chosen_ids", "rejected_ids", "num_tokens")


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
