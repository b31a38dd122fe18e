"""How the metrics are configured (the `metrics:` section of an evaluation recipe)."""

from __future__ import annotations

from pydantic import Field, field_validator

from cluster.config import Strict

# The registry (`evaluation.metrics.registry`) maps each of these names to its class.
METRIC_NAMES: tuple[str, ...] = ("bleu", "chrf", "chrf++", "ter", "comet", "off_target", "repetition")


class MetricsSettings(Strict):
    names: list[str] = Field(default_factory=lambda: ["bleu", "chrf", "chrf++", "ter", "off_target", "repetition"])
    sentence_level: bool = True  # per-segment scores in the generations files
    bleu_tokenize: str = "auto"  # auto: zh for Chinese, ja-mecab (if installed) for Japanese, else 13a
    comet_model: str | None = None  # a COMET checkpoint (model.ckpt or the folder holding checkpoints/)
    comet_batch_size: int = Field(16, gt=0)
    comet_num_cpus: float = Field(1.0, ge=0)
    comet_num_gpus: float = Field(0.0, ge=0)

    @field_validator("names")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown} (known: {', '.join(METRIC_NAMES)})")
        if len(set(names)) != len(names):
            raise ValueError("metric names repeat")
        return names
