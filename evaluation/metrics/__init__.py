"""Metrics, one module each, behind the contract in `evaluation.metrics.base`.

This package must stay importable without the main environment's libraries: the COMET worker
(`python -m evaluation.metrics.comet_worker`) runs under `.venv-comet`, which has neither Ray nor xalign's
dependencies. So the registry names classes by import path and loads them on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

METRICS: dict[str, str] = {
    "bleu": "evaluation.metrics.bleu:Bleu",
    "chrf": "evaluation.metrics.chrf:ChrF",
    "chrf++": "evaluation.metrics.chrf:ChrFPlusPlus",
    "ter": "evaluation.metrics.ter:Ter",
    "comet": "evaluation.metrics.comet:Comet",
    "off_target": "evaluation.metrics.off_target:OffTarget",
}


def metric_class(name: str) -> Any:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    module, cls = METRICS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_metric(name: str, settings: Any = None) -> Any:
    """An instance of the named metric, configured from `MetricsSettings` (defaults when None)."""
    if settings is None:
        from evaluation.recipe import MetricsSettings

        settings = MetricsSettings()
    return metric_class(name).from_settings(settings)
