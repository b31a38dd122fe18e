"""Filters: language ID per field, length bounds, exact and near-duplicate removal; rejects keep a reason."""

import random

from pipelines.data.filters import apply_record_filters, dedup
from pipelines.data.recipe import DedupFilter, Filters
from pipelines.data.schema import RECORD_SCHEMA, new_record, to_table

GERMAN = "Der Bundestag hat heute ein neues Gesetz über erneuerbare Energien beschlossen."
ENGLISH = "The parliament passed a new law on renewable energy sources this afternoon."


def rec(sid, checks, kind="sft", lang="deu_Latn", builder="b", text=None, **kw):
    return new_record(sample_id=sid, kind=kind, builder=builder, lang=lang, checks=checks,
                      dedup_text=text or " ".join(c[2] for c in checks), **kw)


def test_language_id_rejects_confident_mismatches_only():
    rows = [
        rec("ok", [["source", "eng_Latn", ENGLISH], ["target", "deu_Latn", GERMAN]]),
        rec("wrong", [["source", "eng_Latn", ENGLISH], ["target", "deu_Latn", ENGLISH]]),
        rec("short", [["source", "eng_Latn", ENGLISH], ["target", "deu_Latn", "OK 42"]]),  # too short to judge
    ]
    out = {r["sample_id"]: r for r in apply_record_filters(rows, Filters())}
    assert out["ok"]["reject_reason"] is None and out["short"]["reject_reason"] is None
    assert out["wrong"]["reject_reason"] == "lang_mismatch" and out["wrong"]["reject_stage"] == "langid"
    assert "target: declared deu_Latn, detected eng_Latn" in out["wrong"]["reject_detail"]
    off = Filters.model_validate({"langid": {"enabled": False}})
    assert apply_record_filters([rec("w", [["target", "deu_Latn", ENGLISH]])], off)[0]["reject_reason"] is None


def test_off_target_answer_must_really_be_off_target():
    good = rec("good", [["target", "deu_Latn", GERMAN], ["rejected", "deu_Latn", ENGLISH]], kind="dpo",
               chosen=GERMAN, rejected=ENGLISH)
    bad = rec("bad", [["target", "deu_Latn", GERMAN], ["rejected", "deu_Latn", GERMAN + " Ja."]], kind="dpo",
              chosen=GERMAN, rejected=GERMAN + " Ja.")
    out = {r["sample_id"]: r for r in apply_record_filters([good, bad], Filters())}
    assert out["good"]["reject_reason"] is None
    assert out["bad"]["reject_reason"] == "rejected_on_target"


def test_length_bounds():
    cfg = Filters.model_validate({"length": {"min_chars": 5, "max_chars": 60}, "langid": {"enabled": False}})
    rows = apply_record_filters([
        rec("empty", [["prompt", "eng_Latn", "Summarize this."], ["response", "eng_Latn", "  "]]),
        rec("long", [["prompt", "eng_Latn", ENGLISH + " " + ENGLISH]]),
        rec("fine", [["prompt", "eng_Latn", "Summarize this."]]),
        rec("dpo", [["prompt", "eng_Latn", "Summarize this."]], kind="dpo", chosen="A good answer.", rejected=""),
    ], cfg)
    got = {r["sample_id"]: (r["reject_reason"], r["reject_detail"]) for r in rows}
    assert got["empty"] == ("too_short", "response: 0 characters < 5")
    assert got["long"][0] == "too_long_chars" and got["fine"] == (None, None)
    assert got["dpo"] == ("too_short", "rejected: 0 characters < 5")


def test_dedup_exact_and_near_within_a_language_in_id_order():
    cfg = DedupFilter()
    base = ("The committee will publish its final report on the water supply next Tuesday morning, "
            "together with a plan for the repairs that the city council asked for in the spring.")
    rows = [
        rec("a1", [], text=base),
        rec("a2", [], text=base.upper() + "  "),  # same after normalization
        rec("a3", [], text=base + " Yes."),  # near duplicate
        rec("a4", [], text="A completely different sentence about football results and the weather."),
        rec("fr1", [], text=base, lang="fra_Latn"),  # other language: a different group
        rec("other-builder", [], text=base, builder="c"),  # other builder: a different group
    ]
    apply_record_filters(rows, Filters.model_validate({"langid": {"enabled": False}}))
    groups = {}
    for r in rows:
        groups.setdefault(dedup.group_key(r), []).append(r)
    for g in groups.values():
        random.Random(0).shuffle(g)  # arrival order must not matter
        dedup.dedup_group(g, cfg)
    got = {r["sample_id"]: (r["reject_reason"], r["reject_detail"]) for r in rows}
    assert got["a1"] == (None, None) and got["a4"] == (None, None)
    assert got["a2"] == ("exact_duplicate", "same text as a1")
    assert got["a3"][0] == "near_duplicate" and "a1" in got["a3"][1]
    assert got["fr1"] == (None, None) and got["other-builder"] == (None, None)


def test_dedup_table_gives_the_verdicts_of_dedup_group():
    """The Ray stage moves only the columns dedup reads into Python; the verdicts must be the row version's."""
    base = "The committee will publish its final report on the water supply next Tuesday morning."
    for cfg in (DedupFilter(), DedupFilter(near=False), DedupFilter(exact=False)):
        rows = [rec(f"s{i}", [], text=base + ("!" * (i % 3)) + (" Yes." if i % 4 == 0 else "")) for i in range(9)]
        rows.append(rec("gone", [], text=base, reject_reason="too_short", reject_stage="length"))
        apply_record_filters(rows, Filters.model_validate({"langid": {"enabled": False}, "dedup": cfg.model_dump()}))
        shuffled = rows[:]
        random.Random(1).shuffle(shuffled)
        table = dedup.dedup_table(to_table([dict(r) for r in shuffled]), cfg)
        expected = dedup.dedup_group([dict(r) for r in rows], cfg)
        assert table.schema == RECORD_SCHEMA and table.column("minhash").null_count == len(rows)
        got = table.drop_columns(["minhash"]).to_pylist()
        assert got == [{k: v for k, v in r.items() if k != "minhash"} for r in expected]
        assert sum(r["reject_reason"] is not None for r in got) > 1


def test_near_dedup_can_be_switched_off():
    base = "The committee will publish its final report on the water supply next Tuesday morning."
    rows = [rec("a1", [], text=base), rec("a2", [], text=base + "!")]
    cfg = Filters.model_validate({"langid": {"enabled": False}, "dedup": {"near": False}})
    apply_record_filters(rows, cfg)
    assert rows[0]["minhash"] is None
    dedup.dedup_group(rows, cfg.dedup)
    assert [r["reject_reason"] for r in rows] == [None, None]


def test_preference_pair_with_identical_answers_is_rejected():
    same = rec("same", [["prompt", "eng_Latn", "What is 2 + 2?"]], kind="dpo", chosen="4", rejected=" 4 ")
    out = apply_record_filters([same], Filters())[0]
    assert out["reject_reason"] == "rejected_equals_chosen" and out["reject_stage"] == "pairs"
