"""Every recipe shipped under recipes/ validates against the model its `kind:` names."""

import pytest

from cluster.config import RECIPES_DIR, RecipeError
from xalign.recipes import load_any

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe = load_any(path)
    assert recipe.kind == path.read_text().split("kind:", 1)[1].split()[0]


def test_recipe_without_kind_is_rejected(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\n")
    with pytest.raises(RecipeError, match="kind: required"):
        load_any(p)
    p.write_text("kind: bake\n")
    with pytest.raises(RecipeError, match="unknown recipe kind 'bake'"):
        load_any(p)
