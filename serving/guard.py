"""Off-target guard: language ID on every translation, and the conversation for one retry when it is wrong.

The retry prompt comes from the shared prompt module, so the strong instruction is the one the data
pipeline can also train on: `translation_instruction(..., strict=True)` re-asks a first turn;
`follow_up("fix", tgt)` shows the model its answer and asks for the target language only (follow-up
turns, whose instruction is the user's own, always take this path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cluster import langid, prompts
from cluster.langid import Detection

Strategy = Literal["strict", "fix"]


@dataclass(frozen=True)
class Verdict:
    detection: Detection | None  # None when the text is too short to identify
    on_target: bool | None  # None when undetermined

    @property
    def off_target(self) -> bool | None:
        return None if self.on_target is None else not self.on_target

    @property
    def label(self) -> str | None:
        return self.detection.flores or self.detection.label if self.detection else None


def check(text: str, target: str) -> Verdict:
    on = langid.is_on_target(text, target)
    det = langid.detect(text)
    return Verdict(det if det.label else None, on)


@dataclass(frozen=True)
class FirstTurn:
    """What a fresh translation asked: enough to re-ask it strictly."""

    source: str
    text: str


def retry_messages(
    messages: list[dict[str, str]], bad_output: str, target: str, strategy: Strategy, first_turn: FirstTurn | None
) -> tuple[list[dict[str, str]], Strategy]:
    """The conversation for the retry, and the strategy actually used."""
    if strategy == "strict" and first_turn is not None:
        strict = prompts.translation_messages(first_turn.source, target, first_turn.text, strict=True)
        return [*messages[:-1], *strict], "strict"
    fix = prompts.follow_up("fix", target)
    return [*messages, {"role": "assistant", "content": bad_output}, {"role": "user", "content": fix}], "fix"

