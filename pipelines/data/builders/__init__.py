"""The builders (one module each) and how their work is cut into units for Ray tasks.

A unit is a position range of one source for one builder; every random choice inside is keyed by the
record, so the units' size and order never change the output.
"""

from __future__ import annotations

from cluster.config import RecipeError
from pipelines.data.builders import crosslingual, instructions, interactive, preference, rl_prompts, translation
from pipelines.data.builders.context import BuildContext, Unit
from pipelines.data.inventory import SourceInfo
from pipelines.data.recipe import PrepareRecipe

BUILDERS = {
    "instructions": instructions,
    "translation": translation,
    "interactive": interactive,
    "crosslingual": crosslingual,
    "preference": preference,
    "rl": rl_prompts,
}


def primary_sources(cfg) -> list[str]:
    """The sources a builder iterates; the crosslingual builder looks its other sources up by id."""
    return cfg.sources[:1] if cfg.type == "crosslingual" else list(cfg.sources)


def check_plan(recipe: PrepareRecipe, infos: dict[str, SourceInfo]) -> None:
    """Recipe errors that need the scanned sources (languages present, enough of them)."""
    for name, b in recipe.builders.items():
        for s in b.sources:
            info = infos[s]
            if b.type == "translation" and b.languages:
                missing = [x for x in b.languages if x not in info.languages]
                if missing and info.type == "multi_parallel":
                    raise RecipeError(f"builders.{name}.languages: {missing} not in source {s!r} {info.languages}")
            if b.type == "rl":
                try:
                    rl_prompts.directions(b, info)
                except ValueError as exc:
                    field = "languages" if b.languages else "directions"
                    raise RecipeError(f"builders.{name}.{field}: {exc}") from None
                if b.skip_lines >= info.count:
                    raise RecipeError(f"builders.{name}.skip_lines: {b.skip_lines} skips every line of source {s!r} "
                                      f"({info.count} lines)")
            if b.type == "interactive" and len(info.languages) < 3:
                raise RecipeError(f"builders.{name}: source {s!r} needs at least 3 languages for follow-ups")


def plan_units(recipe: PrepareRecipe, infos: dict[str, SourceInfo]) -> list[Unit]:
    check_plan(recipe, infos)
    size = recipe.ray.chunk_records
    units = []
    for name, b in recipe.builders.items():
        for s in primary_sources(b):
            n = infos[s].count
            units += [Unit(name, s, start, min(start + size, n)) for start in range(0, n, size)]
    return units


def build_unit(unit: Unit | dict, ctx: BuildContext) -> list[dict]:
    if isinstance(unit, dict):
        unit = Unit(**unit)
    cfg = ctx.recipe.builders[unit.builder]
    return list(BUILDERS[cfg.type].build(unit, cfg, ctx))
