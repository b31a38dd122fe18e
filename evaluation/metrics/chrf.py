"""chrF (sacrebleu defaults, what WMT reports) and chrF++ (word bigrams added, as in xLLMs-100)."""

from __future__ import annotations

from typing import Any

from evaluation.directions import Direction
from evaluation.metrics.base import SacrebleuMetric


class ChrF(SacrebleuMetric):
    name = "chrf"
    word_order = 0

    def sacrebleu_metric(self, direction: Direction, sentence_level: bool = False) -> Any:
        from sacrebleu.metrics import CHRF

        return CHRF(word_order=self.word_order)


class ChrFPlusPlus(ChrF):
    name = "chrf++"
    word_order = 2
