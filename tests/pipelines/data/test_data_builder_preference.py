"""Builder 5: cross-lingual preference pairs for DPO."""

import json
from collections import Counter

from pipelines.data.builders.preference import degrade
from pipelines.data.seeding import rng


def test_pairs_from_parallel_text(build_records, ntrex):
    rows = build_records({"sources": {"ntrex": ntrex}, "builders": {"p": {
        "type": "preference", "sources": ["ntrex"], "reasons": {"off_target": 1, "degraded": 1}}}})
    pairs = [r for r in rows if r["reject_reason"] is None]
    assert all(r["kind"] == "dpo" for r in rows) and len(rows) == 40 * 4
    reasons = Counter(r["pref_reason"] for r in pairs)
    assert set(reasons) == {"off_target", "degraded"}
    for r in pairs:
        assert r["chosen"] == r["checks"][1][2] and r["rejected"] != r["chosen"]
        assert r["messages"][-1]["role"] == "user" and r["checks"][0][2] in r["messages"][-1]["content"]
        if r["pref_reason"] == "off_target":
            assert r["rejected_lang"] != r["lang"] and r["checks"][2] == ["rejected", r["lang"], r["rejected"]]
        else:
            assert r["rejected_lang"] == r["lang"] and "rejected=" in r["detail"]


def test_pairs_from_aligned_instructions_and_files(build_records, alpaca, tmp_path):
    f = tmp_path / "prefs.jsonl"
    f.write_text(json.dumps({"prompt": "Translate to German: Thank you", "chosen": "Danke", "rejected": "Thank you",
                             "lang": "de", "reason": "source_copy"}) + "\n")
    rows = build_records({"sources": {**alpaca, "prefs": {"type": "preference", "path": str(f)}}, "builders": {"p": {
        "type": "preference", "sources": ["alpaca_en", "alpaca_zh", "prefs"]}}})
    en = next(r for r in rows if r["sample_id"] == "p/alpaca_en/000001")
    assert en["chosen"] == "The three primary colors are red, blue, and yellow."
    assert en["rejected"] == "三原色是红色、蓝色和黄色。" and en["rejected_lang"] == "zho_Hans"
    assert en["pref_reason"] == "off_target"
    given = next(r for r in rows if r["source"] == "prefs")
    assert (given["lang"], given["pref_reason"], given["rejected"]) == ("deu_Latn", "source_copy", "Thank you")


def test_degrade_makes_a_worse_translation():
    text = "Der schnelle braune Fuchs springt über den faulen Hund am Fluss."
    for i in range(20):
        out, how = degrade(text, "deu_Latn", rng(0, i))
        assert out != text and how in ("truncated", "dropped_words", "shuffled")
        assert len(out) <= len(text)
    zh, _ = degrade("敏捷的棕色狐狸跳过了懒狗。", "zho_Hans", rng(0, "zh"))
    assert " " not in zh
    assert degrade("Hi there", "eng_Latn", rng(0)) is None
