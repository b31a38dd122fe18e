"""Builder 6: RL prompts with references (GRPO), from parallel text only, never Flores."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cluster import prompts
from cluster.config import RecipeError, validate
from cluster.locations import resolve_data_path
from cluster.tokenizer import load_tokenizer
from pipelines.data import inventory
from pipelines.data.builders import build_unit, plan_units
from pipelines.data.builders.context import BuildContext
from pipelines.data.filters import apply_record_filters
from pipelines.data.recipe import Filters, PrepareRecipe
from pipelines.data.tokenization import tokenize_rows


def rl_recipe(source: dict, **builder) -> dict:
    return {"sources": {"ntrex": source}, "builders": {"rl": {"type": "rl", "sources": ["ntrex"], **builder}}}


def raw_records(data: dict) -> list[dict]:
    """Records as the build stage makes them (messages still JSON), in unit order."""
    recipe = validate(PrepareRecipe, data)
    infos = inventory.scan(recipe)
    ctx = BuildContext(recipe, infos)
    return [r for u in plan_units(recipe, infos) for r in build_unit(u, ctx)]


def ntrex_line(code: str, line: int) -> str:
    return resolve_data_path(f"ntrex128/{code}.txt").read_text(encoding="utf-8").split("\n")[line - 1]


def test_one_prompt_per_sentence_and_direction(build_records, ntrex):
    rows = build_records(rl_recipe(ntrex, languages=["de", "zh"]))
    assert len(rows) == 40 * 4 and {r["kind"] for r in rows} == {"rl"}
    by_direction = Counter(f"{r['src_lang']}>{r['lang']}" for r in rows)
    assert by_direction == {"eng_Latn>deu_Latn": 40, "deu_Latn>eng_Latn": 40, "eng_Latn>zho_Hans": 40,
                            "zho_Hans>eng_Latn": 40}
    for r in rows:
        src, tgt, line = r["src_lang"], r["lang"], r["source_index"]
        assert r["sample_id"] == f"rl/ntrex/{line:06d}/{src}>{tgt}"
        assert r["source_text"] == ntrex_line(src, line) and r["reference"] == ntrex_line(tgt, line)
        # the prompt is the shared template 0, with no answer: the policy writes it
        assert r["messages"] == prompts.translation_messages(src, tgt, r["source_text"], 0)
        assert r["detail"] == "template=0" and r["chosen"] is None and r["rejected"] is None
        assert r["checks"] == [["source", src, r["source_text"]], ["target", tgt, r["reference"]]]
        assert r["source_file"] == f"ntrex128/{src}.txt"


def test_explicit_directions_cap_template_and_skip(build_records, ntrex):
    rows = build_records(rl_recipe(ntrex, directions=["de->zh", "en->sw"], per_direction=7, template=3,
                                   skip_lines=10))
    assert Counter(f"{r['src_lang']}>{r['lang']}" for r in rows) == {"deu_Latn>zho_Hans": 7, "eng_Latn>swh_Latn": 7}
    assert all(r["source_index"] > 10 for r in rows)
    r = rows[0]
    assert r["messages"] == prompts.translation_messages(r["src_lang"], r["lang"], r["source_text"], 3)


def test_draw_is_seeded_and_independent_of_work_units(ntrex):
    def ids(**extra) -> list[str]:
        data = rl_recipe(ntrex, per_direction=5, languages=["de", "fr"])
        data.update(extra)
        return sorted(r["sample_id"] for r in raw_records(data))

    first = ids()
    assert len(first) == 4 * 5 and first == ids()  # deterministic
    assert ids(ray={"chunk_records": 7}) == first  # units cut differently: the same draw
    assert ids(mixing={"seed": 1}) != first  # the recipe seed picks the lines
    lines = {d: {s.split("/")[2] for s in first if s.endswith(d)} for d in ("eng_Latn>deu_Latn", "deu_Latn>eng_Latn")}
    assert lines["eng_Latn>deu_Latn"] != lines["deu_Latn>eng_Latn"]  # each direction draws its own lines


@pytest.mark.parametrize(("source", "builder", "message"), [
    ({"path": "flores200/dev_subset510"}, {}, r"sources\.ntrex\..*path.*Flores-200 is the held-out evaluation set"),
    ({"path": "eval/flores101_dev"}, {}, r"sources\.ntrex\.path: eval/flores101_dev is Flores.*builders\.rl"),
])
def test_flores_is_refused_naming_the_field(ntrex, source, builder, message):
    with pytest.raises(RecipeError, match=message):
        validate(PrepareRecipe, rl_recipe({**ntrex, **source}, **builder))


def test_a_source_named_flores_is_refused(ntrex):
    data = {"sources": {"flores_dev": ntrex}, "builders": {"rl": {"type": "rl", "sources": ["flores_dev"]}}}
    with pytest.raises(RecipeError, match=r"builders\.rl\.sources: 'flores_dev' is named as Flores"):
        validate(PrepareRecipe, data)


@pytest.mark.parametrize(("builder", "message"), [
    ({"directions": ["en-de"]}, r"builders\.rl\.rl\.directions.*write a direction as src->tgt"),
    ({"directions": ["en->en"]}, r"same language"),
    ({"directions": ["en->de", "eng_Latn->deu_Latn"]}, r"listed twice"),
    ({"directions": ["en->de"], "languages": ["fr"]}, r"languages: only with directions: english_centric"),
    ({"template": 99}, r"template"),
    ({"per_direction": 0}, r"per_direction"),
])
def test_bad_rl_builders_name_the_key(ntrex, builder, message):
    with pytest.raises(RecipeError, match=message):
        validate(PrepareRecipe, rl_recipe(ntrex, **builder))


@pytest.mark.parametrize(("builder", "message"), [
    ({"directions": ["en->ja"]}, r"builders\.rl\.directions: languages \['jpn_Jpan'\] are not in source 'ntrex'"),
    ({"languages": ["ko"]}, r"builders\.rl\.languages: languages \['kor_Hang'\] are not in source"),
    ({"skip_lines": 40}, r"builders\.rl\.skip_lines: 40 skips every line of source 'ntrex' \(40 lines\)"),
])
def test_plan_errors_name_the_key(ntrex, builder, message):
    with pytest.raises(RecipeError, match=message):
        raw_records(rl_recipe(ntrex, **builder))


def test_rl_is_not_an_sft_builder(ntrex):
    data = rl_recipe(ntrex)
    data["mixing"] = {"ratios": {"rl": 1.0}}
    with pytest.raises(RecipeError, match=r"mixing\.ratios\.rl: not an SFT builder"):
        validate(PrepareRecipe, data)
    assert validate(PrepareRecipe, rl_recipe(ntrex)).sft_builders() == []


def test_filters_reject_with_a_reason(tmp_path):
    """The reference and source pass the same language-ID and length filters as every other record."""
    en = ["The committee will publish its final report on the new railway line next spring.",
          "Tourists visiting the old town are asked to respect the quiet hours after ten.",
          "Hello there."]
    de = ["Der Ausschuss wird seinen Abschlussbericht über die neue Bahnstrecke im nächsten Frühjahr veröffentlichen.",
          "The museum in the city centre will stay closed for renovation until the end of the year.",  # not German
          ""]
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    source = {"type": "parallel", "src_path": str(tmp_path / "en.txt"), "tgt_path": str(tmp_path / "de.txt"),
              "src_lang": "en", "tgt_lang": "de"}
    rows = apply_record_filters(raw_records(rl_recipe(source, directions=["en->de"])), Filters())
    got = {r["source_index"]: (r["reject_reason"], r["reject_stage"]) for r in rows}
    assert got == {1: (None, None), 2: ("lang_mismatch", "langid"), 3: ("too_short", "length")}
    assert "target: declared deu_Latn" in rows[1]["reject_detail"]


def test_prompt_ids_are_encode_prompt_of_the_translation_messages(tiny_model, ntrex):
    tok = load_tokenizer(tiny_model)
    rows = tokenize_rows(tok, raw_records(rl_recipe(ntrex, directions=["en->de", "zh->en"], per_direction=3)), 512)
    assert len(rows) == 6
    for r in rows:
        msgs = prompts.translation_messages(r["src_lang"], r["lang"], r["source_text"])
        assert json.loads(r["messages"]) == msgs
        ids = prompts.encode_prompt(tok, msgs)
        assert list(r["prompt_ids"]) == ids and r["num_tokens"] == len(ids)
        assert tok.decode(ids).endswith(f"{prompts.START}model\n")  # generation starts right after
        _, labels = prompts.encode(tok, [*msgs, {"role": "assistant", "content": r["reference"]}])
        assert r["reference_tokens"] == sum(lab != -100 for lab in labels)  # the reference and its END marker
        assert r["input_ids"] is None and r["chosen_ids"] is None
    # the prompt plus the reference must fit max_seq_len: rejected, never truncated
    short = tokenize_rows(tok, raw_records(rl_recipe(ntrex, directions=["en->de"], per_direction=2)), 20)
    assert {r["reject_reason"] for r in short} == {"too_long_tokens"}
    assert all(r["prompt_ids"] is None and "> max_seq_len 20" in r["reject_detail"] for r in short)


def test_shipped_grpo_recipe_draws_its_prompts_past_the_sft_lines():
    from xalign.recipes import load_any

    recipe = load_any("grpo-ntrex-mini")
    infos = inventory.scan(recipe)
    ctx = BuildContext(recipe, infos)
    rows = [r for u in plan_units(recipe, infos) for r in build_unit(u, ctx)]
    directions = Counter(f"{r['src_lang']}>{r['lang']}" for r in rows)
    assert len(directions) == 10 and set(directions.values()) == {40}  # en <-> de, fr, zh, ja, sw
    assert min(r["source_index"] for r in rows) > 1200  # SFT/DPO recipes read NTREX lines 1-1200
