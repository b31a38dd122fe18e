"""What every generation backend shares: the request rows, the prompt, the stop tokens, the clean-up.

Prompts come only from `cluster.prompts`. The `chat` style (default) is translation template 0 in the
shared chat template, the prompt serving sends and training uses, so a score measures what users get.
The `few_shot` style is `cluster.prompts.few_shot_prompt`, plain text without turn markers: the fair
reference point for a base model that was never taught the chat format. Its examples are the last
`shots` segments of each direction's test data, which are then never scored.
"""

from __future__ import annotations

import json
from typing import Any

from cluster import prompts
from evaluation.loaders import DirectionData

# The few-shot prompt ends with `<Target>:`; the model's answer is the rest of that line.
FEW_SHOT_STOP = ["\n"]


def build_requests(data: list[DirectionData], style: str = "chat",
                   shots: dict[str, list[tuple[str, str]]] | None = None) -> list[dict[str, Any]]:
    """One row per segment and direction; `idx` restores the order after distributed generation.

    Few-shot rows carry their whole prompt text (`few_shot`); chat rows are rendered where they are encoded.
    """
    if style not in ("chat", "few_shot"):
        raise ValueError(f"generation.prompt: unknown prompt style {style!r} (chat or few_shot)")
    rows = []
    for d in data:
        key = d.direction.key
        if style == "few_shot" and not (shots or {}).get(key):
            raise ValueError(f"{key}: the few_shot prompt needs example pairs")
        for seg_id, text in zip(d.ids, d.sources):
            row = {"idx": len(rows), "direction": key, "id": seg_id, "src": d.direction.src,
                   "tgt": d.direction.tgt, "source": text, "style": style}
            if style == "few_shot":
                row["few_shot"] = prompts.few_shot_prompt(d.direction.src, d.direction.tgt, text, shots[key])
            rows.append(row)
    return rows


def split_shots(full: DirectionData, k: int, limit: int | None) -> tuple[DirectionData, list[tuple[str, str]]]:
    """The scored head of a direction and `k` examples from its end, never overlapping."""
    if len(full) <= k:
        raise ValueError(f"{full.direction.key}: {len(full)} segments leave none to score after {k} few-shot examples")
    shots = [(s, r) for s, r in zip(full.sources[-k:], full.references[0][-k:])]
    room = len(full) - k
    return full.head(room if limit is None else min(limit, room)), shots


def messages(row: dict[str, Any], template: int = 0) -> list[dict[str, str]]:
    """The chat a row asks to continue: its own conversation (`messages`, JSON: a follow-up turn) or the
    translation instruction."""
    if row.get("messages"):
        return json.loads(row["messages"])
    return prompts.translation_messages(row["src"], row["tgt"], row["source"], template=template)


def prompt_text(row: dict[str, Any], template: int = 0) -> str:
    """The text the model sees after its BOS token (what `encode_row` tokenizes), saved with each hypothesis."""
    if row.get("style") == "few_shot":
        return row["few_shot"]
    return prompts.render_text(messages(row, template), bos_token=None, add_generation_prompt=True)


def encode_row(tokenizer: Any, row: dict[str, Any], template: int = 0) -> list[int]:
    """Prompt token ids for vLLM: BOS, then the prompt (chat turns or plain few-shot text)."""
    if row.get("style") == "few_shot":
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + tokenizer.encode(row["few_shot"], add_special_tokens=False)
    return prompts.encode_prompt(tokenizer, messages(row, template))


def stop_strings(style: str) -> list[str]:
    return [prompts.END, *FEW_SHOT_STOP] if style == "few_shot" else [prompts.END]


def clean(text: str) -> str:
    """One segment per line: cut at the end marker, strip, join internal line breaks with spaces."""
    text = text.split(prompts.END, 1)[0]
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())
