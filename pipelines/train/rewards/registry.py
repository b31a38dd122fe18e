"""The reward registry (a recipe's `rewards.weights` names -> classes) and `score`, which combines them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipelines.train.rewards.base import Reward, Rollout
from pipelines.train.rewards.bleu import BleuReward
from pipelines.train.rewards.chrf import ChrFReward
from pipelines.train.rewards.language import LanguageReward
from pipelines.train.rewards.length import LengthReward
from pipelines.train.rewards.repetition import RepetitionReward
from pipelines.train.rewards.settings import REWARD_NAMES, RewardSettings

REWARDS: dict[str, type[Reward]] = {
    "chrf": ChrFReward,
    "bleu": BleuReward,
    "language": LanguageReward,
    "repetition": RepetitionReward,
    "length": LengthReward,
}
assert tuple(REWARDS) == REWARD_NAMES, "settings.REWARD_NAMES and the registry list the same rewards"


def reward_class(name: str) -> type[Reward]:
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r} (known: {', '.join(REWARDS)})")
    return REWARDS[name]


def get_reward(name: str, settings: RewardSettings | None = None) -> Reward:
    """An instance of the named reward, configured from `RewardSettings` (defaults when None)."""
    return reward_class(name).from_settings(settings if settings is not None else RewardSettings())


def score(rollouts: Sequence[Rollout],
          settings: RewardSettings | None = None) -> tuple[list[float], dict[str, list[float]]]:
    """(total, components): per rollout, the sum over rewards of weight * reward; and each computed reward's values
    (for per-component mean/std logging). Only rewards with weight > 0 are computed or returned. Every reward's
    output is checked against the contract (one finite value in [0, 1] per rollout), so a broken reward fails the
    step instead of training on garbage."""
    settings = settings if settings is not None else RewardSettings()
    rollouts = list(rollouts)
    active = settings.weights.active()
    components: dict[str, list[float]] = {}
    for name in active:
        values = [float(v) for v in get_reward(name, settings).score(rollouts)]
        if len(values) != len(rollouts):
            raise RuntimeError(f"reward {name!r} gave {len(values)} values for {len(rollouts)} rollouts")
        bad = next((i for i, v in enumerate(values) if not (math.isfinite(v) and 0.0 <= v <= 1.0)), None)
        if bad is not None:
            raise RuntimeError(f"reward {name!r} gave {values[bad]!r} for rollout {bad}, outside [0, 1]")
        components[name] = values
    total = [sum(active[name] * components[name][i] for name in active) for i in range(len(rollouts))]
    return total, components
