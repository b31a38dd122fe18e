"""Every recipe kind and the model that validates it: used to load any file under recipes/ by its `kind:`.

It lives in the user's layer because it names every capability's recipe model; the loading itself is
`cluster.config.load_recipe`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cluster.config import RecipeError, find_recipe, load_recipe, load_yaml
from evaluation.recipe import EvalRecipe
from pipelines.data.recipe import PrepareRecipe
from pipelines.train.recipe import TrainRecipe
from serving.recipe import ServeRecipe
from xalign.demo import DemoRecipe

RECIPE_KINDS: dict[str, type[BaseModel]] = {
    "prepare": PrepareRecipe,
    "train": TrainRecipe,
    "serve": ServeRecipe,
    "evaluate": EvalRecipe,
    "demo": DemoRecipe,
}


def model_for_kind(kind: str) -> type[BaseModel]:
    if kind not in RECIPE_KINDS:
        raise RecipeError(f"kind: unknown recipe kind {kind!r} (known: {', '.join(RECIPE_KINDS)})")
    return RECIPE_KINDS[kind]


def load_any(recipe: str | Path, overrides: list[str] | None = None) -> BaseModel:
    """Load a recipe of whatever kind its `kind:` key names (used to validate all of recipes/)."""
    path = find_recipe(recipe)
    kind = load_yaml(path).get("kind")
    if not isinstance(kind, str):
        raise RecipeError(f"{path}: kind: required (one of {', '.join(RECIPE_KINDS)})")
    return load_recipe(model_for_kind(kind), path, overrides)
