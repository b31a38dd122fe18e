"""Sentence BLEU / 100: sacrebleu's `sentence_bleu` settings (exponential smoothing, effective order), with the
tokenizer the evaluation's BLEU picks for the target language (`cluster.bleu_tokenize`: `zh` for Chinese, `char`
for scripts without spaces, `13a` elsewhere). Sparse on single sentences, so off by default."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from cluster.bleu_tokenize import auto_tokenizer
from pipelines.train.rewards.base import Reward, Rollout, from_percent


@cache
def _bleu(tokenize: str) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)


class BleuReward(Reward):
    name = "bleu"

    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        return [from_percent(_bleu(auto_tokenizer(r.tgt_lang)).sentence_score(r.completion, [r.reference]).score)
                for r in rollouts]
