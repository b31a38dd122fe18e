"""What every builder gets: the recipe, the scanned sources, and the few helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

from cluster import prompts
from pipelines.data.inventory import SourceInfo
from pipelines.data.recipe import PrepareRecipe


@dataclass(frozen=True)
class Unit:
    """One task's share of the work: positions [start, stop) of one source for one builder."""

    builder: str
    source: str
    start: int
    stop: int

    def as_item(self) -> dict:
        return {"builder": self.builder, "source": self.source, "start": self.start, "stop": self.stop}


@dataclass(frozen=True)
class BuildContext:
    recipe: PrepareRecipe
    infos: dict[str, SourceInfo]

    @property
    def seed(self) -> int:
        return self.recipe.mixing.seed


def template_pool(spec: list[int] | str) -> list[int]:
    if spec == "all":
        return list(range(len(prompts.TRANSLATION_TEMPLATES)))
    if spec == "canonical":
        return [0]
    return list(spec)


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def translation_pairs(info: SourceInfo, subset: list[str] | None, pivot: str) -> list[tuple[str, str]]:
    """(pivot side, other side) pairs of a parallel source; a pair source without the pivot keeps its order."""
    if info.type != "multi_parallel":
        a, b = info.languages
        return [(a, b)] if b != pivot else [(b, a)]
    langs = subset or info.languages
    missing = [x for x in langs if x not in info.languages]
    if missing:
        raise ValueError(f"languages {missing} are not in source {info.name!r} ({', '.join(info.languages)})")
    return [(pivot, x) for x in langs if x != pivot]
