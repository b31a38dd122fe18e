"""The one prompt and chat-template module.

Data building, training, serving and evaluation all render conversations here, so what the model is
trained on is exactly what it is served and scored with. Conversations are encoded to token ids here
too (serving sends ids to vLLM, never re-rendered text), and the Jinja `CHAT_TEMPLATE` exported with
every checkpoint reproduces `render_text` byte for byte for tools that read the template instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cluster import languages

Role = Literal["system", "user", "assistant"]
START, END = "<start_of_turn>", "<end_of_turn>"
SPECIAL_TOKENS = (START, END)

# Gemma's turn format, with the assistant called "model". A system message is its own turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool  # True for assistant replies: the only tokens that carry loss


class TokenizerLike(Protocol):
    bos_token: str | None
    bos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def _as_dict(message: Any) -> dict[str, str]:
    if isinstance(message, dict):
        return message
    return {"role": message.role, "content": message.content}


def validate_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    out = []
    for i, raw in enumerate(messages):
        m = _as_dict(raw)
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}].role: must be system, user or assistant (got {role!r})")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content: must be a string (got {type(content).__name__})")
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("messages: at least one message is required")
    return out


def render_segments(
    messages: Sequence[Any], bos_token: str | None = "<bos>", add_generation_prompt: bool = False
) -> list[Segment]:
    """The rendered conversation as segments; assistant replies (with their end marker) are trainable."""
    segs: list[Segment] = [Segment(bos_token, False)] if bos_token else []
    for m in validate_messages(messages):
        role = "model" if m["role"] == "assistant" else m["role"]
        if m["role"] == "assistant":
            segs.append(Segment(f"{START}{role}\n", False))
            segs.append(Segment(f"{m['content']}{END}", True))
            segs.append(Segment("\n", False))
        else:
            segs.append(Segment(f"{START}{role}\n{m['content']}{END}\n", False))
    if add_generation_prompt:
        segs.append(Segment(f"{START}model\n", False))
    return segs


def render_text(messages: Sequence[Any], bos_token: str | None = "<bos>", add_generation_prompt: bool = False) -> str:
    return "".join(s.text for s in render_segments(messages, bos_token, add_generation_prompt))


def encode(
    tokenizer: TokenizerLike, messages: Sequence[Any], add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on every non-trainable token) for one conversation.

    Segments are tokenized separately so the prompt/response boundary is exact; they meet at turn
    markers, which are special tokens, so this equals tokenizing the whole text.
    """
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(-100)
    for seg in render_segments(messages, None, add_generation_prompt):
        part = tokenizer.encode(seg.text, add_special_tokens=False)
        ids.extend(part)
        labels.extend(part if seg.trainable else [-100] * len(part))
    return ids, labels


def encode_prompt(tokenizer: TokenizerLike, messages: Sequence[Any]) -> list[int]:
    """Prompt ids for generation: the conversation plus the opening of the model's turn."""
    return encode(tokenizer, messages, add_generation_prompt=True)[0]


# ---- Translation instructions -------------------------------------------------------------------
# A pool written in several languages (x-LLaMA, BayLing 2); index 0 is the canonical one that
# serving and evaluation use, so scores measure the prompt users actually send. It is ALMA's prompt: the
# target language's name is the last thing before the answer. With the instruction only at the top, a 270M
# model after a short SFT mostly copied or paraphrased the source (docs/RESULTS.md, the quick profile).
TRANSLATION_TEMPLATES: tuple[str, ...] = (
    "Translate this from {src} to {tgt}:\n{src}: {text}\n{tgt}:",
    "Translate the following text from {src} into {tgt}.\n\n{text}",
    "Please translate this {src} sentence into {tgt}:\n{text}",
    "{src}: {text}\n{tgt}:",
    "What is the {tgt} translation of the following {src} text?\n{text}",
    "请将下面的{src}文本翻译成{tgt}：\n{text}",
    "Übersetze den folgenden Text aus dem {src} ins {tgt}:\n{text}",
    "Traduis le texte suivant du {src} vers le {tgt} :\n{text}",
    "Traduce el siguiente texto del {src} al {tgt}:\n{text}",
    "Переведите следующий текст с языка {src} на язык {tgt}:\n{text}",
)

FOLLOW_UPS: dict[str, str] = {
    "retarget": "Now translate it into {tgt}.",
    "formal": "Make the {tgt} translation more formal.",
    "shorter": "Make the {tgt} translation shorter.",
    "fix": "That answer is not in {tgt}. Translate the text into {tgt} only.",
}

# Put before the instruction by the off-target guard when it retries a generation (before, so that a template's
# closing target-language cue stays the last thing the model reads).
STRICT_PREFIX = "Answer only with the {tgt} translation, written in {tgt}, and nothing else.\n\n"


def translation_instruction(src: str, tgt: str, text: str, template: int = 0, strict: bool = False) -> str:
    s, t = languages.get(src), languages.get(tgt)
    body = TRANSLATION_TEMPLATES[template].format(src=s.name, tgt=t.name, text=text)
    return (STRICT_PREFIX.format(tgt=t.name) if strict else "") + body


def translation_messages(
    src: str, tgt: str, text: str, template: int = 0, strict: bool = False
) -> list[dict[str, str]]:
    return [{"role": "user", "content": translation_instruction(src, tgt, text, template, strict)}]


def follow_up(kind: str, tgt: str) -> str:
    if kind not in FOLLOW_UPS:
        raise ValueError(f"follow-up kind {kind!r} is unknown (known: {', '.join(FOLLOW_UPS)})")
    return FOLLOW_UPS[kind].format(tgt=languages.get(tgt).name)


def few_shot_prompt(src: str, tgt: str, text: str, shots: Sequence[tuple[str, str]]) -> str:
    """Plain-text few-shot prompt for base models (a reference point; not a chat prompt)."""
    s, t = languages.get(src), languages.get(tgt)
    lines = [f"{s.name}: {a}\n{t.name}: {b}\n" for a, b in shots]
    return "\n".join([*lines, f"{s.name}: {text}\n{t.name}:"])
