"""A suite resolved against the data: which directions run, and their segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.locations import data_root
from evaluation import directions as dirs
from evaluation.directions import Direction
from evaluation.loaders import DirectionData, LoaderError, TestSetReader, open_test_set
from evaluation.recipe import EvalRecipe


@dataclass
class Suite:
    name: str
    root: Path
    reader: TestSetReader
    directions: list[Direction]

    def load(self, limit: int | None = None) -> list[DirectionData]:
        return [self.reader.load(d).head(limit) for d in self.directions]


def test_set_path(recipe: EvalRecipe) -> Path:
    p = Path(recipe.test_set.path).expanduser()
    if p.is_absolute():
        return p
    root = Path(recipe.data_root).expanduser() if recipe.data_root else data_root()
    assert root is not None
    return root / p


def resolve(recipe: EvalRecipe) -> Suite:
    """Open the test set and expand the recipe's directions; unknown or unavailable ones are errors."""
    path = test_set_path(recipe)
    reader = open_test_set(recipe.test_set.format, path, recipe.test_set.references)
    try:
        langs = dirs.resolve_languages(recipe.languages, reader.languages())
        wanted = dirs.expand(recipe.directions, langs)
    except dirs.DirectionError as exc:
        raise LoaderError(f"suite {recipe.name}: {exc}") from None
    available = set(reader.available())
    missing = [d.key for d in wanted if d not in available]
    if missing:
        raise LoaderError(f"suite {recipe.name}: {path} has no data for {', '.join(missing)}")
    return Suite(recipe.name, path, reader, wanted)
