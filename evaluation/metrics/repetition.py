"""Repetition-loop rate: the share of hypotheses caught in a degenerate loop ("ya kwanza ya kwanza ya kwanza ...").

The rule (tandem repeat or low diversity, excused when the source repeats itself) lives in `cluster.repetition`,
shared with the GRPO repetition reward; its docstring explains it and the checks behind its thresholds.

Score: % of hypotheses looping (lower is better); sentence scores 1.0 (looping) or 0.0; the details give the
count, the excused ones, and a few examples of the repeated unit.
"""

from __future__ import annotations

from collections import Counter

from cluster.repetition import (
    MAX_DISTINCT,
    MAX_UNIT,
    MIN_COPIES,
    MIN_COVER,
    MIN_LENGTH,
    MIN_WIDTH,
    NGRAM,
    Loop,
    excused,
    find_loop,
    width,
)
from evaluation.metrics.base import Metric, MetricInput, MetricResult

# The rule's names stay importable from here, where the metric's tests and callers have always found them.
__all__ = ["MIN_WIDTH", "SIGNATURE", "Loop", "Repetition", "excused", "find_loop", "width"]

EXAMPLES = 5  # repeated units kept in the details

SIGNATURE = (f"repetition|period:1-{MAX_UNIT}ch|copies:{MIN_COPIES}+|width:{MIN_WIDTH}+|cover:{MIN_COVER}|"
             f"distinct{NGRAM}g<{MAX_DISTINCT}@{MIN_LENGTH}ch|source-excused|unit:% of hypotheses")


class Repetition(Metric):
    name = "repetition"
    higher_is_better = False
    needs_references = False

    def score(self, data: MetricInput, sentence_level: bool = False) -> MetricResult:
        loops = [find_loop(h) for h in data.hypotheses]
        faithful = [loop is not None and excused(loop, src) for loop, src in zip(loops, data.sources)]
        flagged = [loop if loop is not None and not ok else None for loop, ok in zip(loops, faithful)]
        looping = sum(loop is not None for loop in flagged)
        rate = 100.0 * looping / len(flagged) if flagged else 0.0
        kinds = Counter(loop.kind for loop in flagged if loop is not None)
        examples = [{"index": i, "unit": loop.unit, "copies": round(loop.copies, 1), "kind": loop.kind}
                    for i, loop in enumerate(flagged) if loop is not None][:EXAMPLES]
        details = {"looping": looping, "hypotheses": len(flagged), "excused": sum(faithful),
                   "kinds": dict(kinds.most_common()), "examples": examples}
        sentences: list[float | None] | None = (
            [float(loop is not None) for loop in flagged] if sentence_level else None)
        return MetricResult(self.name, rate, SIGNATURE, sentences, details)
