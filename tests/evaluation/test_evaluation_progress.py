"""Prompt styles (chat vs few-shot), per-direction checkpoints and the resume rules, without an engine."""

import json

import pytest

from cluster import prompts
from cluster.config import RecipeError, load_recipe
from cluster.locations import data_root
from evaluation.directions import Direction
from evaluation.generation.requests import build_requests, encode_row, prompt_text, split_shots, stop_strings
from evaluation.loaders import open_test_set
from evaluation.outputs import RunDir
from evaluation.progress import Progress, ResumeError
from evaluation.recipe import EvalRecipe

FLORES = data_root() / "flores200" / "dev_subset510"


def _data(pair: str):
    return open_test_set("flores200", FLORES).load(Direction.parse(pair))


def test_few_shot_examples_come_from_the_end_and_are_never_scored():
    full = _data("en-de")
    head, shots = split_shots(full, 3, 20)
    assert len(head) == 20 and head.ids == full.ids[:20]
    assert shots == list(zip(full.sources[-3:], full.references[0][-3:]))
    # Without a limit the examples are cut off the scored set rather than overlapping it.
    head, _ = split_shots(full, 3, None)
    assert len(head) == len(full) - 3 and not set(head.ids) & set(full.ids[-3:])
    with pytest.raises(ValueError, match="leave none to score"):
        split_shots(full.head(3), 3, None)


def test_prompt_styles_render_from_the_shared_prompt_module(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    full = _data("de-en")
    head, shots = split_shots(full, 2, 2)
    few = build_requests([head], "few_shot", {"de-en": shots})
    text = prompts.few_shot_prompt("de", "en", head.sources[0], shots)
    assert few[0]["few_shot"] == text == prompt_text(few[0])
    assert text.endswith(f"German: {head.sources[0]}\nEnglish:") and prompts.START not in text
    assert encode_row(tok, few[0]) == [tok.bos_token_id, *tok.encode(text, add_special_tokens=False)]
    assert stop_strings("few_shot") == [prompts.END, "\n"] and stop_strings("chat") == [prompts.END]

    chat = build_requests([head])
    msgs = prompts.translation_messages("de", "en", head.sources[0])
    assert encode_row(tok, chat[0]) == prompts.encode_prompt(tok, msgs)
    assert prompt_text(chat[0]) == prompts.render_text(msgs, bos_token=None, add_generation_prompt=True)
    with pytest.raises(ValueError, match="needs example pairs"):
        build_requests([head], "few_shot", {})
    with pytest.raises(ValueError, match="unknown prompt style"):
        build_requests([head], "zero_shot")


def test_recipe_checks_prompt_and_resume_keys():
    r = load_recipe(EvalRecipe, "eval-flores200-demo", ["generation.prompt=few_shot", "generation.shots=2"])
    assert r.generation.prompt == "few_shot" and r.generation.shots == 2 and r.directions[0] == "en-de"
    with pytest.raises(RecipeError, match=r"generation\.prompt"):
        load_recipe(EvalRecipe, "eval-flores200-demo", ["generation.prompt=zero_shot"])
    with pytest.raises(RecipeError, match="no translation template 99"):
        load_recipe(EvalRecipe, "eval-flores200-demo", ["generation.template=99"])
    with pytest.raises(RecipeError, match="resume: needs run_id"):
        load_recipe(EvalRecipe, "eval-flores200-demo", ["resume=true"])


def _rows(key, ids):
    return [{"idx": i, "direction": key, "id": s, "source": f"s{s}", "raw": f"h{s}", "hypothesis": f"h{s}",
             "unrelated": 1} for i, s in enumerate(ids)]


def test_checkpoints_resume_only_matching_finished_directions(tmp_path):
    run = RunDir(tmp_path / "r1")
    expected = {"en-de": ["0", "1"], "de-en": ["0", "1"], "en-zh": ["0", "1"]}
    ident = {"name": "m", "fingerprint": "abc"}
    recipe = load_recipe(EvalRecipe, "eval-flores200-demo", ["run_id=r1"])
    p = Progress.open(run, recipe, ident, expected)
    p.save("en-de", _rows("en-de", ["0", "1"]))
    p.save("de-en", _rows("de-en", ["0"]))  # e.g. written by a run with another limit: not reusable
    assert not list(p.folder.glob("*.tmp"))
    saved = json.loads(p.path("en-de").read_text().splitlines()[0])
    assert saved["hypothesis"] == "h0" and "unrelated" not in saved

    with pytest.raises(ResumeError, match=r"already exists.*--resume r1"):
        Progress.open(run, recipe, ident, expected)
    resume = recipe.model_copy(update={"resume": True})
    again = Progress.open(run, resume, ident, expected)
    assert list(again.finished()) == ["en-de"]
    with pytest.raises(ResumeError, match="other model"):
        Progress.open(run, resume, {"name": "m", "fingerprint": "other"}, expected)
    longer = resume.model_copy(update={"generation": resume.generation.model_copy(update={"max_tokens": 7})})
    with pytest.raises(ResumeError, match="other sampling"):
        Progress.open(run, longer, ident, expected)
    with pytest.raises(ResumeError, match="no generation checkpoints"):
        Progress.open(RunDir(tmp_path / "never-ran"), resume, ident, expected)
