"""Builder 3: interactive (multi-turn) translation from multi-way parallel text (BayLing)."""

from pathlib import Path

import pytest

from cluster import langid, prompts
from cluster.locations import data_root


def test_conversations_retarget_into_new_languages(build_records, ntrex):
    rows = build_records({"sources": {"ntrex": ntrex}, "builders": {"chat": {
        "type": "interactive", "sources": ["ntrex"], "turns": 3, "lead_sentence": 0}}})  # single sentences only
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


def _ntrex_line(code: str, line: int) -> str:
    with open(Path(data_root()) / "ntrex128" / f"{code}.txt", encoding="utf-8") as fh:
        return fh.read().splitlines()[line - 1]


def test_shorter_is_the_lead_sentence_of_a_two_sentence_passage(build_records, ntrex):
    """With no rewrite files, `shorter` is taught from the text: a passage of lines i and i+1, shortened to line i
    in the language asked for; a retarget after it translates the shortened text."""
    rows = build_records({"sources": {"ntrex": ntrex}, "builders": {"chat": {
        "type": "interactive", "sources": ["ntrex"], "turns": 3, "lead_sentence": 1.0,
        "follow_ups": {"retarget": 1.0, "shorter": 3.0}}}})
    assert len(rows) == 40 and len({r["sample_id"] for r in rows}) == 40
    passages = [r for r in rows if "passage=lead_sentence" in r["detail"]]
    assert len(passages) > 20  # every line that starts a two-sentence passage of one article
    shortened = 0
    for r in passages:
        line, src, msgs = r["source_index"], r["src_lang"], r["messages"]
        assert r["sample_id"].split("/")[2] == f"{line:06d}-{line + 1:06d}"
        # both pivot sentences end a sentence: a passage never runs into the next article's headline
        assert all(_ntrex_line("eng_Latn", n).rstrip()[-1] in ".!?\"'”’" for n in (line, line + 1))
        joiner = "" if src == "zho_Hans" else " "
        assert r["checks"][0][2] == _ntrex_line(src, line).strip() + joiner + _ntrex_line(src, line + 1).strip()
        kinds = r["detail"].split("follow_ups=")[1].split(",")
        is_short = False
        for k, (kind, (_, lang, text), follow, answer) in enumerate(zip(kinds, r["checks"][2:], msgs[2::2],
                                                                          msgs[3::2])):
            assert follow["content"] == prompts.follow_up(kind, lang) and answer["content"] == text
            if kind == "shorter":
                shortened += 1
                is_short = True
                previous = msgs[2 * k + 1]["content"]
                assert lang == r["checks"][k + 1][1]  # the language stays
                assert text == _ntrex_line(lang, line) and len(text) < len(previous)
                assert langid.is_on_target(text, lang) is True
            elif is_short:  # "it" is now the lead sentence
                assert text == _ntrex_line(lang, line)
        assert kinds.count("shorter") <= 1
    assert shortened > len(passages) / 2
    # lines that cannot start a passage (a headline, or the source's last line) keep single-sentence conversations
    singles = [r for r in rows if "passage" not in r["detail"]]
    assert singles and all("shorter" not in r["detail"] for r in singles)


def test_lead_sentence_is_on_by_default_and_seeded(build_records, ntrex):
    """The default builder teaches `shorter` on the lines that allow it; the choices depend on the seed and record
    only, never on how the source is cut into units (a passage may end in the next unit)."""
    recipe = {"sources": {"ntrex": ntrex},
              "builders": {"chat": {"type": "interactive", "sources": ["ntrex"], "turns": 3}}}
    rows = build_records(recipe)
    assert any("shorter" in r["detail"] for r in rows)
    assert all(("shorter" in r["detail"]) <= ("passage=lead_sentence" in r["detail"]) for r in rows)
    assert build_records({**recipe, "ray": {"chunk_records": 3}}) == rows
    reseeded = build_records({**recipe, "mixing": {"seed": 7}})
    assert [r["sample_id"] for r in reseeded] != [r["sample_id"] for r in rows]
    # no `shorter` asked for: no passages
    no_short = {**recipe, "builders": {"chat": {**recipe["builders"]["chat"], "follow_ups": {"retarget": 1.0}}}}
    assert all("passage" not in r["detail"] for r in build_records(no_short))


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_lead_sentence_share_is_validated(build_records, ntrex, share):
    from cluster.config import RecipeError

    with pytest.raises(RecipeError, match="lead_sentence"):
        build_records({"sources": {"ntrex": ntrex}, "builders": {"chat": {
            "type": "interactive", "sources": ["ntrex"], "lead_sentence": share}}})
