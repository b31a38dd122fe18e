"""Paired bootstrap resampling between two systems on the same segments (sacrebleu's `paired-bs`).

sacrebleu's `PairedTest` is the Moses `bootstrap-hypothesis-difference-significance.pl` procedure:
resample segment indices with replacement, recompute each corpus metric from sufficient statistics, and
report the p-value of the observed difference, plus 95% confidence intervals. The seed is sacrebleu's
(`SACREBLEU_SEED`, default 12345), so results are reproducible.
"""

from __future__ import annotations

from math import comb
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


def paired_rate(base: list[float | None], new: list[float | None]) -> dict[str, Any]:
    """Exact McNemar test between two per-segment 0/1 verdicts (e.g. off-target) on the same segments.

    Rates are over the segments both systems had a verdict for; the test looks only at the discordant pairs
    (flagged in one system, not the other), two-sided, with the exact binomial distribution."""
    if len(base) != len(new):
        raise ValueError("paired rate test needs verdicts for the same segments")
    pairs = [(a, b) for a, b in zip(base, new) if a is not None and b is not None]
    n = len(pairs)
    only_base = sum(1 for a, b in pairs if a and not b)
    only_new = sum(1 for a, b in pairs if b and not a)
    p = mcnemar_exact(only_base, only_new)
    rate_base = 100.0 * sum(1 for a, _ in pairs if a) / n if n else None
    rate_new = 100.0 * sum(1 for _, b in pairs if b) / n if n else None
    return {"base": rate_base, "new": rate_new,
            "delta": None if rate_base is None or rate_new is None else rate_new - rate_base,
            "p_value": p, "significant": p < ALPHA, "segments": n,
            "only_base": only_base, "only_new": only_new, "test": "exact McNemar (two-sided)"}


def mcnemar_exact(only_base: int, only_new: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (1.0 when there are none)."""
    k, m = min(only_base, only_new), only_base + only_new
    return min(1.0, 2 * sum(comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
