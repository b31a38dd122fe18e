"""The contract every GRPO reward implements: score a batch of rollouts, one float per rollout.

Convention, for every reward: a value in [0, 1], higher is better. Quality rewards (chrF, BLEU) are the metric
scaled to [0, 1]; checks (language, repetition, length) are 1.0 when the rollout passes and fall towards 0.0 as
it fails. Penalties are therefore never negative: `registry.score` takes the weighted sum, and a weight says how
much a failed check costs. Rewards score whole batches so a reward with setup (a tokenizer, a model) pays it once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cluster import languages


@dataclass(frozen=True)
class Rollout:
    """One sampled translation with what the rewards judge it against."""

    completion: str  # the generated text, chat markers and stop strings stripped
    reference: str  # the reference translation
    source: str  # the text to translate
    src_lang: str  # Flores-200 codes, e.g. "eng_Latn"
    tgt_lang: str  # e.g. "deu_Latn"
    finish_reason: str | None  # vLLM's: "stop" (ended), "length" (cut off at max_tokens), "abort", None
    completion_tokens: int  # tokens generated

    def __post_init__(self) -> None:
        for key in ("src_lang", "tgt_lang"):
            code = getattr(self, key)
            if languages.get(code).flores != code:  # raises UnknownLanguageError on unknown codes
                raise ValueError(f"{key} {code!r} is not a Flores-200 code (e.g. {languages.get(code).flores!r})")
        if self.completion_tokens < 0:
            raise ValueError(f"completion_tokens {self.completion_tokens} is negative")


class Reward(ABC):
    name: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Any) -> Reward:
        """An instance configured from `RewardSettings` (rewards without options ignore it)."""
        return cls()

    @abstractmethod
    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        """One value in [0, 1] per rollout, in order; higher is better."""


def from_percent(score: float) -> float:
    """A 0..100 metric score as a reward; clamped because sacrebleu's exp/log arithmetic can land a hair past 100."""
    return min(1.0, max(0.0, score / 100.0))
