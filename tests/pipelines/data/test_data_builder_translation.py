"""Builder 2: translation instructions from parallel text (x-LLaMA)."""

from collections import Counter

from cluster import prompts
from cluster.languages import get


def test_pairs_directions_and_templates(build_records, ntrex):
    ntrex["limit"] = 200
    rows = build_records({"sources": {"ntrex": ntrex},
                          "builders": {"tr": {"type": "translation", "sources": ["ntrex"],
                                              "to_non_english_share": 0.8}}})
    assert len(rows) == 200 * 4  # one per (line, pivot<->language pair)
    to_other = sum(r["lang"] != "eng_Latn" for r in rows) / len(rows)
    assert abs(to_other - 0.8) < 0.05  # the x-LLaMA share of non-English targets
    assert len(Counter(r["detail"] for r in rows)) == len(prompts.TRANSLATION_TEMPLATES)  # the whole pool is used
    for r in rows[:50]:
        user, answer = r["messages"]
        assert get(r["src_lang"]).name in user["content"] and get(r["lang"]).name in user["content"]
        src_text, ref = r["checks"][0][2], r["checks"][1][2]
        assert src_text in user["content"] and answer["content"] == ref
        assert r["sample_id"].endswith(f"{r['src_lang']}>{r['lang']}")


def test_both_directions_canonical_template_and_language_subset(build_records, ntrex):
    rows = build_records({"sources": {"ntrex": ntrex},
                          "builders": {"tr": {"type": "translation", "sources": ["ntrex"], "both_directions": True,
                                              "templates": "canonical", "languages": ["en", "sw"]}}})
    assert len(rows) == 40 * 2
    assert {(r["src_lang"], r["lang"]) for r in rows} == {("eng_Latn", "swh_Latn"), ("swh_Latn", "eng_Latn")}
    r = rows[0]
    assert r["messages"][0]["content"] == prompts.translation_instruction(r["src_lang"], r["lang"], r["checks"][0][2])


def test_two_file_and_tsv_sources(build_records, tmp_path):
    (tmp_path / "a.de").write_text("Guten Morgen\nDanke\n")
    (tmp_path / "a.en").write_text("Good morning\nThanks\n")
    (tmp_path / "p.tsv").write_text("Bonjour\tHello\n")
    rows = build_records({
        "sources": {"pair": {"type": "parallel", "src_path": str(tmp_path / "a.de"), "tgt_path": str(tmp_path / "a.en"),
                             "src_lang": "de", "tgt_lang": "en"},
                    "tsv": {"type": "tsv", "path": str(tmp_path / "p.tsv"), "src_lang": "fr", "tgt_lang": "en"}},
        "builders": {"tr": {"type": "translation", "sources": ["pair", "tsv"], "to_non_english_share": 1.0}},
    })
    got = {(r["src_lang"], r["lang"], r["messages"][1]["content"]) for r in rows}
    assert got == {("eng_Latn", "deu_Latn", "Guten Morgen"), ("eng_Latn", "deu_Latn", "Danke"),
                   ("eng_Latn", "fra_Latn", "Bonjour")}
