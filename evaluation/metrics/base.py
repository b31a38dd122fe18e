"""The contract every metric implements.

A metric scores one direction at a time (`score`) or many at once (`score_many`, which COMET overrides
to batch everything through one model load). It returns the corpus score, a signature string saying
exactly how it was computed, optional per-segment scores and metric-specific details. Metrics backed
by sacrebleu also hand out the sacrebleu object, which paired bootstrap resampling needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evaluation.directions import Direction


@dataclass
class MetricInput:
    direction: Direction
    sources: list[str]
    hypotheses: list[str]
    references: list[list[str]]  # references[k][i]: k-th reference stream

    def __post_init__(self) -> None:
        n = len(self.hypotheses)
        if len(self.sources) != n or not self.references or any(len(r) != n for r in self.references):
            raise ValueError(f"{self.direction.key}: sources, hypotheses and references differ in length")


@dataclass
class MetricResult:
    name: str
    score: float
    signature: str
    sentence_scores: list[float | None] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self, with_sentences: bool = False) -> dict[str, Any]:
        out = {"name": self.name, "score": self.score, "signature": self.signature, "details": self.details}
        if with_sentences:
            out["sentence_scores"] = self.sentence_scores
        return out


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_references: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, settings: Any) -> Metric:
        return cls()

    @abstractmethod
    def score(self, data: MetricInput, sentence_level: bool = False) -> MetricResult: ...

    def score_many(self, data: Sequence[MetricInput], sentence_level: bool = False) -> list[MetricResult]:
        return [self.score(d, sentence_level) for d in data]


class SacrebleuMetric(Metric):
    """A metric computed by a sacrebleu `Metric` object configured per target language."""

    def sacrebleu_metric(self, direction: Direction, sentence_level: bool = False) -> Any:
        raise NotImplementedError

    def score(self, data: MetricInput, sentence_level: bool = False) -> MetricResult:
        corpus = self.sacrebleu_metric(data.direction)
        result = corpus.corpus_score(data.hypotheses, data.references)
        sentences = None
        if sentence_level:
            per = self.sacrebleu_metric(data.direction, sentence_level=True)
            sentences = [
                per.sentence_score(h, [r[i] for r in data.references]).score for i, h in enumerate(data.hypotheses)
            ]
        return MetricResult(self.name, float(result.score), corpus.get_signature().format(), sentences,
                            {"text": str(result)})
