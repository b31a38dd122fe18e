"""Length: the completion about as long as the reference, and finished.

With w(x) the display width (`cluster.repetition.width`: CJK and other wide characters count two, so a
completion that drifts out of the target script is measured on the scale of the reference) and
r = w(completion) / max(w(reference), 1):

    reward = 0                          when finish_reason == "length" (cut off at max_tokens: it never ended)
             r / low                    when r < low       (0 for an empty answer, rising to 1 at low)
             1                          when low <= r <= high
             max(0, 2 - r / high)       when r > high      (falling to 0 at twice the high end)

The band (`settings.length_band`, default [0.5, 2.0]) is wide: translations differ in length across languages,
and the reward is there to stop truncation, run-ons and empty answers, not to match the reference's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster.repetition import width
from pipelines.train.rewards.base import Reward, Rollout


def length_ratio_reward(ratio: float, low: float, high: float) -> float:
    if ratio < low:
        return ratio / low
    if ratio <= high:
        return 1.0
    return max(0.0, 2.0 - ratio / high)


class LengthReward(Reward):
    name = "length"

    def __init__(self, low: float = 0.5, high: float = 2.0) -> None:
        self.low, self.high = low, high

    @classmethod
    def from_settings(cls, settings: Any) -> LengthReward:
        return cls(*settings.length_band)

    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        return [0.0 if r.finish_reason == "length" else
                length_ratio_reward(width(r.completion) / max(width(r.reference), 1), self.low, self.high)
                for r in rollouts]
