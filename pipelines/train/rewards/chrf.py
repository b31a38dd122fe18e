"""Sentence chrF / 100: the evaluation's chrF (sacrebleu defaults, chrF2: character 6-grams, beta 2, no word
n-grams) on one rollout against its reference. Partial credit for near-misses, in any script."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from pipelines.train.rewards.base import Reward, Rollout, from_percent

WORD_ORDER = 0  # as evaluation.metrics.chrf.ChrF; 2 would be chrF++


@cache
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=WORD_ORDER)


class ChrFReward(Reward):
    name = "chrf"

    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        chrf = _chrf()
        return [from_percent(chrf.sentence_score(r.completion, [r.reference]).score) for r in rollouts]
