"""Builder 4: the instruction in language A, the answer in language B (xLLMs-100)."""

import json

from cluster.languages import get


def test_aligned_items_cross_languages(build_records, alpaca):
    rows = build_records({"sources": alpaca, "builders": {"x": {"type": "crosslingual",
                                                               "sources": ["alpaca_en", "alpaca_zh"]}}})
    assert len(rows) == 60 * 2
    assert {(r["src_lang"], r["lang"]) for r in rows} == {("eng_Latn", "zho_Hans"), ("zho_Hans", "eng_Latn")}
    r = next(r for r in rows if r["sample_id"] == "x/alpaca_en/000001/eng_Latn>zho_Hans")
    assert "What are the three primary colors?" in r["messages"][0]["content"]
    assert get("zh").name in r["messages"][0]["content"]
    assert r["messages"][1]["content"] == "三原色是红色、蓝色和黄色。"


def test_unaligned_items_are_kept_as_rejects(build_records, tmp_path):
    (tmp_path / "en.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"id": "a", "instruction": "Name a fruit.", "output": "An apple."},
        {"id": "b", "instruction": "Name a colour.", "output": "Blue."}]) + "\n")
    (tmp_path / "de.jsonl").write_text(json.dumps({"id": "a", "instruction": "Nenne eine Frucht.",
                                                   "output": "Ein Apfel."}) + "\n")
    rows = build_records({
        "sources": {"en": {"type": "alpaca", "path": str(tmp_path / "en.jsonl"), "lang": "en"},
                    "de": {"type": "alpaca", "path": str(tmp_path / "de.jsonl"), "lang": "de"}},
        "builders": {"x": {"type": "crosslingual", "sources": ["en", "de"], "directions_per_item": 1}}})
    kept = [r for r in rows if r["reject_reason"] is None]
    rejected = [r for r in rows if r["reject_reason"] is not None]
    assert len(kept) == 1 and kept[0]["source_index"] == 0
    assert len(rejected) == 1 and rejected[0]["reject_reason"] == "unaligned" and "'b'" in rejected[0]["reject_detail"]
