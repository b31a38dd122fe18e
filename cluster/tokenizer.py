"""The tokenizer's identity and loading, shared by `xalign prepare` (which records it in the manifest) and
`xalign train` (which refuses a dataset tokenized by another tokenizer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cluster import prompts

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


# The parts of tokenizer.json that decide which ids a text becomes. A fine-tuned export re-serializes its tokenizer
# (other formatting, a chat template in tokenizer_config.json) and still encodes every text to the same ids.
_ENCODING_PARTS = ("model", "added_tokens", "normalizer", "pre_tokenizer", "post_processor")


def _token_ids_digest(folder: Path) -> str | None:
    f = folder / "tokenizer.json"
    if not f.is_file():
        return None
    doc = json.loads(f.read_text(encoding="utf-8"))
    parts = {k: doc.get(k) for k in _ENCODING_PARTS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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
        "token_ids_sha256": _token_ids_digest(folder) or h.hexdigest(),
        "files": files,
        "vocab_size": vocab,
        "bos_token_id": bos_id,
        "end_of_turn_id": end_id,
    }


def stop_token_ids(tokenizer: Any, model_dir: str | Path) -> list[int]:
    """Where generation ends, for every engine xalign runs (serving, evaluation, GRPO rollouts): the end of turn
    and every EOS the tokenizer or the model's generation_config names, so answers end where trained ones did."""
    ids = {tokenizer.convert_tokens_to_ids(prompts.END), tokenizer.eos_token_id}
    cfg = Path(model_dir) / "generation_config.json"
    if cfg.is_file():
        eos = json.loads(cfg.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos])
    unk = getattr(tokenizer, "unk_token_id", None)
    return sorted(i for i in ids if isinstance(i, int) and i >= 0 and i != unk)
