"""Target language: 1.0 when `cluster.langid` identifies the completion as the target language, 0.0 when it
identifies another, `settings.language_undetermined` (0.5 by default) when the text is too short to judge.

The decision is `cluster.langid.is_on_target`, the one the evaluation's off-target metric counts, so the reward
pays for exactly what that metric measures. Undetermined sits between the two so a very short (or empty)
answer neither earns nor loses the check; the quality and length rewards judge it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster import langid
from pipelines.train.rewards.base import Reward, Rollout


class LanguageReward(Reward):
    name = "language"

    def __init__(self, undetermined: float = 0.5) -> None:
        self.undetermined = undetermined

    @classmethod
    def from_settings(cls, settings: Any) -> LanguageReward:
        return cls(settings.language_undetermined)

    def score(self, rollouts: Sequence[Rollout]) -> list[float]:
        out = []
        for r in rollouts:
            ok = langid.is_on_target(r.completion, r.tgt_lang)
            out.append(self.undetermined if ok is None else float(ok))
        return out
