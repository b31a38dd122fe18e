"""Paired bootstrap resampling between two systems on the same segments (sacrebleu's `paired-bs`).

sacrebleu's `PairedTest` is the Moses `bootstrap-hypothesis-difference-significance.pl` procedure:
resample segment indices with replacement, recompute each corpus metric from sufficient statistics, and
report the p-value of the observed difference, plus 95% confidence intervals. The seed is sacrebleu's
(`SACREBLEU_SEED`, default 12345), so results are reproducible.
"""

from __future__ import annotations

from typing import Any

from evaluation.directions import Direction
from evaluation.metrics.base import SacrebleuMetric
from evaluation.metrics.registry import get_metric

ALPHA = 0.05


def supported(names: list[str]) -> list[str]:
    """The metrics paired bootstrap can resample: those with sacrebleu sufficient statistics."""
    from evaluation.metrics.registry import metric_class

    return [n for n in names if issubclass(metric_class(n), SacrebleuMetric)]


def paired_bootstrap(direction: Direction, base: list[str], new: list[str], references: list[list[str]],
                     metrics: list[str], n_samples: int = 1000, settings: Any = None) -> dict[str, dict[str, Any]]:
    """{metric: {base, new, delta, p_value, significant, base_ci, new_ci}} with `base` as the baseline."""
    from sacrebleu.significance import PairedTest

    if len(base) != len(new) or any(len(r) != len(base) for r in references):
        raise ValueError(f"{direction.key}: paired test needs hypotheses and references of equal length")
    names = supported(metrics)
    objs = {n: get_metric(n, settings).sacrebleu_metric(direction) for n in names}
    test = PairedTest([("base", base), ("new", new)], objs, references, test_type="bs", n_samples=n_samples)
    signatures, scores = test()
    out: dict[str, dict[str, Any]] = {}
    result_keys = [k for k in scores if k != "System"]
    for name, key in zip(names, result_keys):
        b, n = scores[key]
        out[name] = {
            "base": float(b.score), "new": float(n.score), "delta": float(n.score - b.score),
            "p_value": None if n.p_value is None else float(n.p_value),
            # sacrebleu's p-value (multeval's convention) is 1/(n+1) for identical outputs; no change is no difference.
            "significant": n.p_value is not None and n.p_value < ALPHA and n.score != b.score,
            "base_ci": _interval(b), "new_ci": _interval(n),
            "signature": signatures[key].format(),
        }
    return out


def _interval(result: Any) -> list[float] | None:
    if result.mean is None or result.ci is None:
        return None
    return [float(result.mean - result.ci), float(result.mean + result.ci)]
