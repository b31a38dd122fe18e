"""Builder 1: high-resource instructions as they are."""

import json

from cluster.locations import data_root
from pipelines.data.schema import RECORD_SCHEMA, to_table


def test_alpaca_items_become_single_turn_conversations(build_records, alpaca):
    rows = build_records({"sources": alpaca,
                          "builders": {"inst": {"type": "instructions", "sources": ["alpaca_en", "alpaca_zh"]}}})
    assert len(rows) == 120 and {r["lang"] for r in rows} == {"eng_Latn", "zho_Hans"}
    raw = json.loads((data_root() / "instructions/alpaca_en_2000.json").read_text())[5]
    en = next(r for r in rows if r["sample_id"] == "inst/alpaca_en/000005")
    assert en["messages"][0]["content"].startswith(raw["instruction"])
    assert en["messages"][1]["content"] == raw["output"]
    assert en["kind"] == "sft" and en["source_file"] == "instructions/alpaca_en_2000.json"
    assert [m["role"] for m in en["messages"]] == ["user", "assistant"]
    assert en["checks"][0][0] == "prompt" and en["checks"][1][:2] == ["response", "eng_Latn"]
    assert len({r["sample_id"] for r in rows}) == len(rows)
    to_table(json_ready(rows), RECORD_SCHEMA)  # rows fit the pipeline's schema


def test_input_field_is_appended_to_the_request(build_records, alpaca):
    rows = build_records({"sources": alpaca, "builders": {"i": {"type": "instructions", "sources": ["alpaca_en"]}}})
    with_input = [r for r in rows if "\n\n" in r["messages"][0]["content"]]
    assert with_input, "Alpaca has items with an input field"
    r = with_input[0]
    assert r["messages"][0]["content"].startswith(r["checks"][0][2])  # the instruction, checked for language


def test_share_keeps_a_seeded_fraction(build_records, alpaca):
    data = {"sources": alpaca, "builders": {"i": {"type": "instructions", "sources": ["alpaca_en"], "share": 0.5}}}
    a, b = build_records(data), build_records(data)
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert 15 <= len(a) <= 45


def json_ready(rows):
    return [{**r, "messages": json.dumps(r["messages"]), "checks": json.dumps(r["checks"])} for r in rows]
