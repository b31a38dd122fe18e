"""How the rewards are weighted and configured (the `rewards:` section of a GRPO recipe).

A rollout's reward is the weighted sum of the rewards (each in [0, 1]); a reward weighted 0 is not computed.
COMET is not offered yet: evaluation runs it in its own environment, out of reach of a training worker.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from cluster.config import Strict

# The registry (`pipelines.train.rewards.registry`) maps each of these names to its class.
REWARD_NAMES: tuple[str, ...] = ("chrf", "bleu", "language", "repetition", "length")


def _weight(default: float) -> Any:
    return Field(default, ge=0, allow_inf_nan=False)


class RewardWeights(Strict):
    chrf: float = _weight(1.0)  # translation quality, partial credit in any script
    bleu: float = _weight(0.0)  # sparse on one sentence: off unless asked for
    language: float = _weight(1.0)  # on target (what the off-target metric counts)
    repetition: float = _weight(0.5)  # no repetition loop
    length: float = _weight(0.25)  # about the reference's length, and finished

    @model_validator(mode="after")
    def _one_positive(self) -> RewardWeights:
        if not any(w > 0 for w in self.as_dict().values()):
            raise ValueError(f"every reward weight is 0: give at least one of {', '.join(REWARD_NAMES)} a weight > 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in REWARD_NAMES}

    def active(self) -> dict[str, float]:
        """The rewards to compute: weight > 0, in `REWARD_NAMES` order."""
        return {name: w for name, w in self.as_dict().items() if w > 0}


class RewardSettings(Strict):
    weights: RewardWeights = Field(default_factory=RewardWeights)
    language_undetermined: float = Field(0.5, ge=0, le=1)  # language reward when the text is too short to judge
    length_band: tuple[float, float] = (0.5, 2.0)  # completion/reference width ratios that earn the full length reward

    @field_validator("length_band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"length_band must be finite with 0 < low <= high, got {list(band)}")
        return band


assert tuple(RewardWeights.model_fields) == REWARD_NAMES, "one weight per reward, in REWARD_NAMES order"
