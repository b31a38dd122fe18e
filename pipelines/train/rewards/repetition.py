"""No repetition loop: 0.0 when the completion is caught in a loop by the evaluation's rule (`cluster.repetition`:
a tandem repeat or low diversity, excused when the source repeats itself), else 1.0."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.repetition import looping
from pipelines.train.rewards.base import Reward, Rollout


class RepetitionReward(Reward):
    name = "repetition"

    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        return [0.0 if looping(r.completion, r.source) else 1.0 for r in rollouts]
