"""TER (sacrebleu): edit rate, lower is better; CJK targets get sacrebleu's Asian-script support."""

from __future__ import annotations

from typing import Any

from evaluation.directions import Direction
from evaluation.metrics.base import SacrebleuMetric

_ASIAN = {"zho_Hans", "zho_Hant", "jpn_Jpan", "kor_Hang"}


class Ter(SacrebleuMetric):
    name = "ter"
    higher_is_better = False

    def sacrebleu_metric(self, direction: Direction, sentence_level: bool = False) -> Any:
        from sacrebleu.metrics import TER

        return TER(asian_support=direction.tgt in _ASIAN)
