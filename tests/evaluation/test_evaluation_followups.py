"""`xalign evaluate followups`: the judging of follow-up answers, the conversations built from Flores dev, bad
settings, and one real two-round run of the tiny model through vLLM (its pass rates mean nothing; the structure
and the verdicts' arithmetic do)."""

import json

import pytest

from cluster import prompts
from cluster.config import apply_overrides, validate
from cluster.locations import data_root
from evaluation.followups import (
    FollowupSettings,
    build_conversations,
    judge_retarget,
    judge_shorter,
    passages,
    second_turn,
)
from xalign.cli import main

DE_LONG = ("Am Montag haben Wissenschaftler der Stanford University ein neues Diagnosewerkzeug vorgestellt. "
           "Es kann Zellen nach ihrem Typ sortieren und kostet fast nichts.")
DE_SHORT = "Am Montag haben Wissenschaftler der Stanford University ein neues Diagnosewerkzeug vorgestellt."
FR = "Lundi, des scientifiques de l'université de Stanford ont présenté un nouvel outil de diagnostic."
ZH = "星期一，斯坦福大学医学院的科学家宣布发明了一种新的诊断工具，可以按类型对细胞进行分类。"


def settings(**overrides) -> FollowupSettings:
    return validate(FollowupSettings, apply_overrides({}, [f"{k}={json.dumps(v)}" for k, v in overrides.items()]))


def test_retarget_passes_only_in_the_language_asked_for():
    assert judge_retarget(FR, "fr").passed and judge_retarget(ZH, "zho_Hans").passed
    wrong = judge_retarget(DE_SHORT, "fra_Latn")
    assert not wrong.passed and wrong.reasons == ("off_target",) and "detected deu_Latn" in wrong.detail
    assert judge_retarget("   ", "fr").reasons == ("empty",)
    assert judge_retarget("OK", "fr").reasons == ("undetermined",)  # too short to tell: not a pass


def test_shorter_must_be_shorter_and_stay_in_the_language():
    ok = judge_shorter(DE_SHORT, DE_LONG, "de")
    assert ok.passed and ok.reasons == () and f"{len(DE_SHORT)} < {len(DE_LONG)}" in ok.detail
    assert judge_shorter(DE_LONG, DE_SHORT, "de").reasons == ("not_shorter",)
    assert judge_shorter(DE_SHORT, DE_SHORT, "de").reasons == ("not_shorter",)  # equal is not shorter
    assert judge_shorter(FR, DE_LONG, "de").reasons == ("off_target",)  # shorter, but another language
    assert judge_shorter(DE_LONG + " " + FR, DE_LONG, "fr").reasons == ("not_shorter", "off_target")
    assert judge_shorter("", DE_LONG, "de").reasons == ("empty",)


def test_passages_are_consecutive_flores_lines():
    assert passages(["0", "1", "5", "6", "7", "9", "10"]) == [(0, 1), (2, 3), (5, 6)]
    assert passages(["3", "8"]) == []


def test_conversations_from_flores_dev():
    s = settings(languages="de,fr,sw", limit=3)
    convs = build_conversations(s)
    assert [(c.kind, c.tgt) for c in convs[:6]] == [("retarget", "deu_Latn")] * 3 + [("shorter", "deu_Latn")] * 3
    assert len(convs) == 3 * 2 * 3
    root = data_root() / "flores200" / "dev_subset510"
    eng = (root / "eng_Latn.dev").read_text(encoding="utf-8").splitlines()
    ids = (root / "ids.txt").read_text().splitlines()
    for c in convs:
        assert c.src == "eng_Latn"
        if c.kind == "retarget":
            assert c.answer_lang in {"deu_Latn", "fra_Latn", "swh_Latn"} - {c.tgt}
            assert c.source == eng[ids.index(c.id)]
        else:
            a, b = (int(x) for x in c.id.split("+"))
            assert b == a + 1 and c.answer_lang == c.tgt
            assert c.source == f"{eng[ids.index(str(a))]} {eng[ids.index(str(b))]}"
    # every other language is asked for in turn
    assert {c.answer_lang for c in convs if c.kind == "retarget" and c.tgt == "swh_Latn"} == {"deu_Latn", "fra_Latn"}
    c = convs[0]
    c.first_answer, c.follow_up = "Hallo", prompts.follow_up("retarget", c.answer_lang)
    turns = second_turn(c, 0)
    assert [m["role"] for m in turns] == ["user", "assistant", "user"] and turns[1]["content"] == "Hallo"
    assert turns[0]["content"] == prompts.translation_instruction("eng_Latn", c.tgt, c.source)


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--languages", "de,klingon"], 2, "languages: Value error, unknown language code 'klingon'"),
    (["--limit", "0"], 2, "limit: Input should be greater than 0"),
    (["--languages", "en,de"], 2, "eng_Latn is the source language"),
    (["--languages", "de"], 2, "a retarget asks for another listed language"),
    (["kinds=[longer]"], 2, "kinds.0: Input should be 'retarget' or 'shorter'"),
    (["--languages", "de,nl"], 1, "no file for nld_Latn"),  # a known language the test set lacks
    (["--limit", "511"], 1, "limit: 511 sentences asked for"),
    (["--limit", "300", "kinds=[shorter]"], 1, "300 two-sentence passages asked for"),
])
def test_bad_settings_fail_before_any_engine_starts(argv, code, message, tmp_path, capsys):
    assert main(["evaluate", "followups", "--model", str(tmp_path), "--output", str(tmp_path), *argv]) == code
    assert message in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_two_rounds_through_vllm(chatty_model, tmp_path, capsys):
    argv = ["evaluate", "followups", "--model", str(chatty_model), "--limit", "2", "--languages", "de,fr",
            "--output", str(tmp_path), "run_id=check", "engine.max_model_len=512", "generation.max_tokens=12"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "follow-ups" in out and "pass rate" in out and "followups.json" in out
    run = tmp_path / "check"
    report = json.loads((run / "followups.json").read_text())
    assert report["run"]["model"]["fingerprint"] and report["run"]["languages"] == ["deu_Latn", "fra_Latn"]
    convs = [json.loads(x) for x in (run / "conversations.jsonl").read_text().splitlines()]
    assert len(convs) == 8 and (run / "recipe.resolved.yaml").is_file()
    for kind in ("retarget", "shorter"):
        res, mine = report["kinds"][kind], [c for c in convs if c["kind"] == kind]
        assert res["n"] == 4 and res["passed"] == sum(c["passed"] for c in mine)
        assert res["pass_rate"] == res["passed"] / 4 and sum(v["n"] for v in res["by_language"].values()) == 4
        ex = res["examples"]
        assert (len(ex["passed"]), len(ex["failed"])) == (min(res["passed"], 3), min(4 - res["passed"], 3))
    for c in convs:
        # the follow-up continues the model's own first answer, in the project's wording
        assert c["follow_up"] == prompts.follow_up(c["kind"], c["answer_lang"])
        assert c["first_answer"] + prompts.END + "\n" in c["prompt"] and c["prompt"].endswith("<start_of_turn>model\n")
        again = (judge_retarget(c["answer"], c["answer_lang"]) if c["kind"] == "retarget"
                 else judge_shorter(c["answer"], c["first_answer"], c["answer_lang"]))
        assert (again.passed, list(again.reasons)) == (c["passed"], c["reasons"])
