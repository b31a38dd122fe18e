"""BLEU (sacrebleu): 13a tokenization, `zh` for Chinese targets, `ja-mecab` for Japanese when installed.

With `bleu_tokenize: auto` the tokenizer follows the target language, as WMT does (`cluster.bleu_tokenize`);
scripts written without spaces (Thai, Lao, Khmer, Burmese, and Japanese without MeCab) fall back to `char`,
since 13a would treat a whole sentence as one word. The signature in every report names the tokenizer used.
"""

from __future__ import annotations

from typing import Any

from cluster.bleu_tokenize import auto_tokenizer
from evaluation.directions import Direction
from evaluation.metrics.base import SacrebleuMetric


class Bleu(SacrebleuMetric):
    name = "bleu"

    def __init__(self, tokenize: str = "auto") -> None:
        self.tokenize = tokenize

    @classmethod
    def from_settings(cls, settings: Any) -> Bleu:
        return cls(settings.bleu_tokenize)

    def tokenizer_for(self, direction: Direction) -> str:
        return auto_tokenizer(direction.tgt) if self.tokenize == "auto" else self.tokenize

    def sacrebleu_metric(self, direction: Direction, sentence_level: bool = False) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(tokenize=self.tokenizer_for(direction), effective_order=sentence_level)
