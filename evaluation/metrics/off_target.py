"""Off-target rate: the share of hypotheses whose language is not the target (xLLMs-100's measure).

Each hypothesis is identified with `cluster.langid` (the same identifier as the data filters and the
serving guard). Hypotheses too short to judge are counted apart, not guessed; the rate is over the judged
ones, and the confusion counts say which languages came out instead.
"""

from __future__ import annotations

from collections import Counter

from evaluation.metrics.base import Metric, MetricInput, MetricResult


class OffTarget(Metric):
    name = "off_target"
    higher_is_better = False
    needs_references = False

    def score(self, data: MetricInput, sentence_level: bool = False) -> MetricResult:
        from cluster import langid

        verdicts: list[float | None] = []
        confusion: Counter[str] = Counter()
        for hyp in data.hypotheses:
            ok = langid.is_on_target(hyp, data.direction.tgt)
            verdicts.append(None if ok is None else float(not ok))
            if ok is False:
                det = langid.detect(hyp)
                confusion[det.flores or det.label or "undetermined"] += 1
        judged = sum(v is not None for v in verdicts)
        off = int(sum(v for v in verdicts if v is not None))
        rate = 100.0 * off / judged if judged else 0.0
        details = {
            "off_target": off, "judged": judged, "undetermined": len(verdicts) - judged,
            "confusion": dict(confusion.most_common()),
        }
        return MetricResult(self.name, rate, "off_target|langid:py3langid+pycld2|unit:% of judged",
                            verdicts if sentence_level else None, details)
