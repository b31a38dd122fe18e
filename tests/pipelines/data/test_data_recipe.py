"""The prepare recipe: shipped recipes validate, bad ones fail naming the key."""

import pytest

from cluster.config import RecipeError, load_recipe, validate
from pipelines.data.recipe import PrepareRecipe
from xalign.recipes import load_any

SHIPPED = ("bayling2-mini", "bayling2-mini-noxling", "xllama-mini", "xllms100-mini", "grpo-ntrex-mini")


def base(**extra) -> dict:
    data = {
        "sources": {
            "en": {"type": "alpaca", "path": "instructions/alpaca_en_2000.json", "lang": "en"},
            "zh": {"type": "alpaca", "path": "instructions/alpaca_zh_2000.json", "lang": "zh"},
            "ntrex": {"type": "multi_parallel", "path": "ntrex128", "languages": ["en", "de", "fr"]},
        },
        "builders": {"instructions": {"type": "instructions", "sources": ["en", "zh"]}},
    }
    data.update(extra)
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name):
    recipe = load_any(name)
    assert isinstance(recipe, PrepareRecipe) and recipe.name == name
    assert recipe.model == "default" and recipe.output_dir == "outputs/datasets"
    # Flores-200 is the evaluation set: no shipped prepare recipe may read it.
    assert "flores" not in str(recipe.model_dump()).lower()


def test_ablation_has_no_crosslingual_data():
    full, ablation = load_any("bayling2-mini"), load_any("bayling2-mini-noxling")
    assert {b.type for b in ablation.builders.values()} == {"instructions"}
    assert set(full.builders["instructions"].sources) == set(ablation.builders["instructions"].sources)
    assert (full.mixing.total, full.mixing.seed, full.max_seq_len) == (
        ablation.mixing.total, ablation.mixing.seed, ablation.max_seq_len)


def test_languages_are_normalized_to_flores():
    r = validate(PrepareRecipe, base())
    assert r.sources["ntrex"].languages == ["eng_Latn", "deu_Latn", "fra_Latn"]
    assert r.sources["en"].lang == "eng_Latn"


@pytest.mark.parametrize(("patch", "message"), [
    ({"sources": {"x": {"type": "alpaca", "path": "a.json", "lang": "klingon"}}}, r"sources\.x\.alpaca\.lang"),
    ({"builders": {"t": {"type": "translation", "sources": ["nope"]}}}, r"unknown source 'nope'"),
    ({"builders": {"t": {"type": "translation", "sources": ["en"]}}}, r"a translation builder takes"),
    ({"mixing": {"ratios": {"translation": 1.0}}}, r"mixing\.ratios\.translation: not an SFT builder"),
    ({"builders": {}}, r"at least one builder"),
    ({"sources": {"f": {"type": "multi_parallel", "path": "flores200/dev_subset510"}}}, r"Flores-200"),
    ({"builders": {"p": {"type": "preference", "sources": ["en"]}}}, r"at least two aligned sets"),
    ({"builders": {"i": {"type": "interactive", "sources": ["ntrex"], "follow_ups": {"louder": 1}}}}, "louder"),
    ({"colour": "blue"}, r"colour: unknown key"),
])
def test_bad_recipes_name_the_key(patch, message):
    data = base()
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and k in ("sources",) else v
    with pytest.raises(RecipeError, match=message):
        validate(PrepareRecipe, data)


def test_overrides_and_identity_excludes_execution_settings():
    r = load_recipe(PrepareRecipe, "xllama-mini", ["model=some/folder", "ray.tokenize_actors=1", "output_dir=/x"])
    assert r.model == "some/folder" and r.ray.tokenize_actors == 1
    ident = r.identity()
    assert "ray" not in ident and "output_dir" not in ident and ident["model"] == "some/folder"
