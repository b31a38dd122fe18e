from pathlib import Path

import pytest
from pydantic import Field

from cluster.config import (
    RecipeError,
    Strict,
    apply_overrides,
    load_recipe,
    recipe_hash,
    save_resolved,
)


class Optim(Strict):
    lr: float = 2e-5
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999])


class Demo(Strict):
    name: str = "x"
    steps: int = 10
    optim: Optim = Field(default_factory=Optim)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_good_recipe_with_overrides(tmp_path):
    p = write(tmp_path, "name: a\nsteps: 3\noptim:\n  lr: 0.1\n")
    r = load_recipe(Demo, p, ["optim.lr=0.5", "steps=7", "optim.betas=[0.8, 0.9]"])
    assert (r.name, r.steps, r.optim.lr, r.optim.betas) == ("a", 7, 0.5, [0.8, 0.9])


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "name: a\noptim:\n  lrr: 0.1\n")
    with pytest.raises(RecipeError, match=r"optim\.lrr: unknown key"):
        load_recipe(Demo, p)


def test_wrong_type_is_named(tmp_path):
    p = write(tmp_path, "steps: many\n")
    with pytest.raises(RecipeError, match=r"steps: .*'many'"):
        load_recipe(Demo, p)


def test_bad_override_forms(tmp_path):
    p = write(tmp_path, "name: a\n")
    with pytest.raises(RecipeError, match=r"key\.sub=value"):
        load_recipe(Demo, p, ["steps"])
    with pytest.raises(RecipeError, match="not a section"):
        load_recipe(Demo, p, ["name.sub=1"])
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(Demo, p, ["nope=1"])


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "name: a\nsteps: [1,\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(Demo, p)


def test_missing_recipe_lists_available():
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(Demo, "no-such-recipe")


def test_overrides_do_not_mutate_input():
    data = {"optim": {"lr": 1}}
    out = apply_overrides(data, ["optim.lr=2"])
    assert data == {"optim": {"lr": 1}} and out == {"optim": {"lr": 2}}


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(Demo, None, ["steps=5"])
    path = save_resolved(r, tmp_path / "out")
    again = load_recipe(Demo, path)
    assert again == r and recipe_hash(again) == recipe_hash(r)
