"""What one `xalign prepare` run knows, in one typed object that both executors and every stage list read.

`check_inputs` runs in the driver before any cluster work, so bad inputs and recipes fail without Ray. The
`RunContext` then gathers what the later stages are declared from (the count pass's counts, the mix plan)
and what the writers sent back, instead of threading them through helpers as positional arguments.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cluster.models import resolve_model
from cluster.tokenizer import tokenizer_identity
from pipelines.data import inventory, mixing, stats
from pipelines.data.builders import plan_units
from pipelines.data.builders.context import BuildContext, Unit
from pipelines.data.recipe import PrepareRecipe


@dataclass(frozen=True)
class Inputs:
    """What the driver learns before any cluster work: bad inputs and recipes fail here, without Ray."""

    model_path: Path
    tokenizer: dict
    infos: dict[str, inventory.SourceInfo]
    files: list[inventory.InputFile]
    units: list[Unit]
    seconds: float


def check_inputs(recipe: PrepareRecipe) -> Inputs:
    """Resolve the tokenizer, hash and validate every input file (encoding, alignment, emptiness), plan units."""
    t0 = time.time()
    model_path = resolve_model(recipe.model)
    tokenizer = tokenizer_identity(model_path)
    infos = inventory.scan(recipe)
    units = plan_units(recipe, infos)
    return Inputs(model_path, tokenizer, infos, inventory.input_files(infos), units, time.time() - t0)


@dataclass
class RunContext:
    """One run: the recipe and its checked inputs, the staging folder, then what the driver learns on the way.

    `counts` and `plan` are set after the count pass (the writer stages are declared from them); the
    `*_files` lists hold the writers' per-file statistics."""

    recipe: PrepareRecipe
    inputs: Inputs
    staging: Path | str  # a local folder, or a storage URI (`s3://…`)
    counts: Counter = field(default_factory=Counter)
    plan: mixing.MixPlan | None = None
    sft_files: list[dict] = field(default_factory=list)
    dpo_files: list[dict] = field(default_factory=list)
    rl_files: list[dict] = field(default_factory=list)
    reject_files: list[dict] = field(default_factory=list)

    @property
    def build(self) -> BuildContext:
        return BuildContext(self.recipe, self.inputs.infos)

    @property
    def built(self) -> int:
        return sum(self.counts.values())

    @property
    def rejected(self) -> int:
        return sum(n for k, n in self.counts.items() if k[3] != stats.KEPT)

    @property
    def pairs(self) -> int:
        """Preference pairs that survived the filters."""
        return sum(n for k, n in self.counts.items() if k[0] == "dpo" and k[3] == stats.KEPT)

    @property
    def rl_prompts(self) -> int:
        """RL prompts that survived the filters."""
        return sum(n for k, n in self.counts.items() if k[0] == "rl" and k[3] == stats.KEPT)

    def num_shards(self, samples: int) -> int:
        shards = self.recipe.shards
        return mixing.num_shards(samples, shards.num_shards, shards.samples_per_shard)
