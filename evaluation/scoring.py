"""Scoring on the cluster: sacrebleu metrics and language ID as one Ray task per (system, direction);
COMET as one actor in its own environment that scores every (system, direction) in one stream.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from evaluation.metrics.base import MetricInput, MetricResult
from evaluation.metrics.registry import get_metric
from evaluation.recipe import MetricsSettings


def score_direction(names: list[str], settings: dict[str, Any], data: MetricInput,
                    sentence_level: bool) -> dict[str, MetricResult]:
    cfg = MetricsSettings.model_validate(settings)
    return {n: get_metric(n, cfg).score(data, sentence_level) for n in names}


def score_all(inputs: list[MetricInput], settings: MetricsSettings) -> list[dict[str, MetricResult]]:
    """Scores for each input, in order: {metric name: result}."""
    import ray

    if not inputs:
        return []
    names = [n for n in settings.names if n != "comet"]
    task = ray.remote(num_cpus=1)(score_direction)
    payload = settings.model_dump()
    refs = [task.remote(names, payload, x, settings.sentence_level) for x in inputs]
    pending = list(refs)
    with tqdm(total=len(refs), desc="scoring", unit="direction") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    results: list[dict[str, MetricResult]] = ray.get(refs)
    if "comet" in settings.names:
        comet = get_metric("comet", settings).score_many(inputs, settings.sentence_level)
        for res, c in zip(results, comet):
            res["comet"] = c
    return [{n: r[n] for n in settings.names} for r in results]
