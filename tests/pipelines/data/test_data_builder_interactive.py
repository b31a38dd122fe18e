"""Builder 3: interactive (multi-turn) translation from multi-way parallel text (BayLing)."""

from cluster import prompts


def test_conversations_retarget_into_new_languages(build_records, ntrex):
    rows = build_records({"sources": {"ntrex": ntrex},
                          "builders": {"chat": {"type": "interactive", "sources": ["ntrex"], "turns": 3}}})
    assert len(rows) == 40
    for r in rows:
        msgs = r["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 3
        targets = [c[1] for c in r["checks"][1:]]
        assert len(set(targets)) == 3 and r["src_lang"] not in targets and r["lang"] == targets[0]
        for (_, lang, text), follow, answer in zip(r["checks"][2:], msgs[2::2], msgs[3::2]):
            assert follow["content"] == prompts.follow_up("retarget", lang) and answer["content"] == text
    from_pivot = sum(r["src_lang"] == "eng_Latn" for r in rows) / len(rows)
    assert 0.25 < from_pivot < 0.75


def test_rewrite_follow_ups_only_where_the_data_has_them(build_records, tmp_path):
    n = 30
    for code, word in {"eng_Latn": "book", "deu_Latn": "Buch", "fra_Latn": "livre"}.items():
        (tmp_path / f"{code}.txt").write_text("".join(f"{word} {i}\n" for i in range(n)))
    # a formal German rewrite for every line but the last (an empty line means none)
    (tmp_path / "deu_Latn.formal.txt").write_text("".join(f"formelles Buch {i}\n" for i in range(n - 1)) + "\n")
    src = {"type": "multi_parallel", "path": str(tmp_path), "variants": ["formal"]}
    rows = build_records({"sources": {"m": src}, "builders": {"chat": {
        "type": "interactive", "sources": ["m"], "turns": 2, "from_pivot_share": 1.0,
        "follow_ups": {"retarget": 0.001, "formal": 1000.0}}}})
    into_german = [r for r in rows if r["lang"] == "deu_Latn"]
    assert into_german
    for r in into_german:
        i = r["source_index"] - 1
        if i < n - 1:
            assert "formal" in r["detail"]
            assert r["messages"][2]["content"] == prompts.follow_up("formal", "deu_Latn")
            assert r["messages"][3]["content"] == f"formelles Buch {i}"
        else:
            assert r["messages"][2]["content"].startswith("Now translate it into")
    assert all("formal" not in r["detail"] for r in rows if r["lang"] != "deu_Latn")
