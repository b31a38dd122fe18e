"""The metric registry: a recipe's `metrics.names` -> the class that computes it."""

from __future__ import annotations

from evaluation.metrics.base import Metric
from evaluation.metrics.bleu import Bleu
from evaluation.metrics.chrf import ChrF, ChrFPlusPlus
from evaluation.metrics.comet import Comet
from evaluation.metrics.off_target import OffTarget
from evaluation.metrics.repetition import Repetition
from evaluation.metrics.settings import METRIC_NAMES, MetricsSettings
from evaluation.metrics.ter import Ter

METRICS: dict[str, type[Metric]] = {
    "bleu": Bleu,
    "chrf": ChrF,
    "chrf++": ChrFPlusPlus,
    "ter": Ter,
    "comet": Comet,
    "off_target": OffTarget,
    "repetition": Repetition,
}
assert tuple(METRICS) == METRIC_NAMES, "settings.METRIC_NAMES and the registry list the same metrics"


def metric_class(name: str) -> type[Metric]:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    return METRICS[name]


def get_metric(name: str, settings: MetricsSettings | None = None) -> Metric:
    """An instance of the named metric, configured from `MetricsSettings` (defaults when None)."""
    return metric_class(name).from_settings(settings if settings is not None else MetricsSettings())
