"""Readers and the input inventory: valid files parse, malformed ones fail naming file and line."""

import json

import pytest

from cluster.config import RecipeError, validate
from pipelines.data import inventory, readers
from pipelines.data.readers import InputError
from pipelines.data.recipe import PrepareRecipe


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_alpaca_json_array_positions_and_lines(tmp_path):
    items = [{"id": i, "instruction": f"Task {i}", "input": "x" if i == 1 else "", "output": f"Answer {i}"}
             for i in range(5)]
    f = write(tmp_path / "a.json", json.dumps(items, indent=1))
    got = readers.read_instructions(f, "alpaca", "en", 1, 3)
    assert [g.index for g in got] == [1, 2]
    assert got[0].instruction == "Task 1\n\nx" and got[0].prompt_text == "Task 1" and got[0].lang == "eng_Latn"
    assert got[0].messages == (("user", "Task 1\n\nx"), ("assistant", "Answer 1"))
    text = f.read_text()
    assert got[1].line == text[: text.index('"id": 2')].count("\n")  # the line where item 2's object opens
    assert readers.count_positions(f) == 5



def test_json_array_slices_from_byte_offsets_equal_one_full_read(tmp_path):
    """Units seek to their items: a BOM, CRLF breaks, multi-byte text and several items on one line must not
    shift an offset or a line number."""
    items = [{"id": i, "instruction": f"Aufgabe {i} 翻译 ✓", "output": "Ответ " * i} for i in range(7)]
    parts = [json.dumps(x, ensure_ascii=False) for x in items]
    body = ("[\r\n  " + ",\r\n  ".join(parts[:3]) + ", " + ", ".join(parts[3:5]) + ",\r\n" + ",".join(parts[5:])
            + "\r\n]")
    f = tmp_path / "bom.json"
    f.write_bytes(readers.UTF8_BOM + body.encode("utf-8"))
    whole = readers.read_instructions(f, "alpaca", "de", 0, 7)
    assert [g.output for g in whole] == [x["output"] for x in items]
    assert [g.line for g in whole] == [2, 3, 4, 4, 4, 5, 5]
    for size in (1, 2, 3, 7):
        pieces = [g for a in range(0, 7, size) for g in readers.read_instructions(f, "alpaca", "de", a, a + size)]
        assert pieces == whole
    assert readers.read_instructions(f, "alpaca", "de", 6, 50) == whole[6:]
    f.write_bytes(json.dumps(items[:2]).encode())  # rewritten in place: the cached index must not be reused
    assert readers.count_positions(f) == 2 and readers.read_instructions(f, "alpaca", "de", 0, 9)[1].id == "1"

@pytest.mark.parametrize(("name", "content", "where", "what"), [
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', 2, "output: field required"),
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": 5}\n', 3,
     "output: Input should be a valid string"),
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"\n', 2, "invalid JSON"),
    ("bad.jsonl", '["a list"]\n', 1, "expected a JSON object"),
    ("bad.jsonl", '{"instruction": "a", "output": "b", "lang": "xx-none"}\n', 1, "lang: unknown language"),
    ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": 1, "output": "d"}]', 2,
     "instruction: Input should be a valid string"),
    ("bad.json", '[{"instruction": "a", "output": "b"}\n {"instruction": "c", "output": "d"}]', 2, "expected ','"),
    ("bad.json", '[{"instruction": "a", "output": "b"},\n\n {"instruction": "c", "output": "d"', 3, "invalid JSON"),
    ("bad.json", '[{"instruction": "a", "output": "b"}', 1, "not closed"),
])
def test_malformed_alpaca_names_file_and_line(tmp_path, name, content, where, what):
    f = write(tmp_path / name, content)
    with pytest.raises(InputError, match=rf"{name}:{where}: .*{what}"):
        readers.read_instructions(f, "alpaca", "en", 0, 10)


def test_language_must_be_declared(tmp_path):
    f = write(tmp_path / "a.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d", '
                                    '"lang": "de"}\n')
    with pytest.raises(InputError, match=r"a.jsonl:1: no language"):
        readers.read_instructions(f, "alpaca", None, 0, 2)
    assert readers.read_instructions(f, "alpaca", None, 1, 2)[0].lang == "deu_Latn"


def test_chat_records(tmp_path):
    good = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Hello!"}], "lang": "en"}
    f = write(tmp_path / "c.jsonl", json.dumps(good) + "\n"
              + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n"
              + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    item = readers.read_instructions(f, "chat", None, 0, 1)[0]
    assert item.prompt_text == "Hi there" and item.output == "Hello!" and len(item.messages) == 3
    with pytest.raises(InputError, match=r"c.jsonl:2: messages: the last message must be the assistant"):
        readers.read_instructions(f, "chat", "en", 1, 2)
    with pytest.raises(InputError, match=r"c.jsonl:3: messages\[0\]\.role"):
        readers.read_instructions(f, "chat", "en", 2, 3)


def test_preference_records(tmp_path):
    f = write(tmp_path / "p.jsonl", json.dumps({"prompt": "Translate: Hallo", "chosen": "Hello", "rejected": "Hallo",
                                                "lang": "en", "reason": "source_copy"}) + "\n"
              + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    rec = readers.read_preferences(f, None, 0, 1)[0]
    assert rec.prompt == (("user", "Translate: Hallo"),) and rec.reason == "source_copy"
    with pytest.raises(InputError, match=r"p.jsonl:2: rejected: field required"):
        readers.read_preferences(f, "en", 1, 2)


def test_tsv_and_utf8_errors(tmp_path):
    f = write(tmp_path / "p.tsv", "Hello\tHallo\nGood\tGut\textra\n")
    assert readers.read_tsv(f, 0, 1) == [(1, "Hello", "Hallo")]
    with pytest.raises(InputError, match=r"p.tsv:2: expected 2 tab-separated fields"):
        readers.read_tsv(f, 0, 2)
    g = tmp_path / "bin.txt"
    g.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"bin.txt:2: not valid UTF-8"):
        readers.read_lines(g, 0, 2)


def _recipe(tmp_path, sources, builder):
    return validate(PrepareRecipe, {"sources": sources, "builders": {"b": builder}})


def test_mismatched_line_counts_name_both_files(tmp_path):
    write(tmp_path / "a.en", "one\ntwo\nthree\n")
    write(tmp_path / "a.de", "eins\nzwei\n")
    r = _recipe(tmp_path, {"p": {"type": "parallel", "src_path": str(tmp_path / "a.en"),
                                 "tgt_path": str(tmp_path / "a.de"), "src_lang": "en", "tgt_lang": "de"}},
                {"type": "translation", "sources": ["p"]})
    with pytest.raises(InputError, match=r"a\.en has 3 lines, .*a\.de has 2"):
        inventory.scan(r)


def test_multi_parallel_folder(tmp_path):
    for code, lines in {"eng_Latn": "a\nb\nc\n", "deu_Latn": "A\nB\nC\n", "fra_Latn": "x\ny\n"}.items():
        write(tmp_path / f"{code}.txt", lines)
    write(tmp_path / "deu_Latn.formal.txt", "Af\n\nCf\n")
    src = {"type": "multi_parallel", "path": str(tmp_path), "languages": ["en", "de"], "variants": ["formal"],
           "limit": 2}
    info = inventory.scan(_recipe(tmp_path, {"m": src}, {"type": "translation", "sources": ["m"]}))["m"]
    assert info.languages == ["eng_Latn", "deu_Latn"] and info.count == 2
    assert set(info.variants["deu_Latn"]) == {"formal"} and len(info.all_files()) == 3
    with pytest.raises(InputError, match=r"_Latn\.txt has 3 lines, .*fra_Latn\.txt has 2"):
        inventory.scan(_recipe(tmp_path, {"m": {**src, "languages": "all"}},
                               {"type": "translation", "sources": ["m"]}))
    with pytest.raises(RecipeError, match=r"no file for swh_Latn"):
        inventory.scan(_recipe(tmp_path, {"m": {**src, "languages": ["en", "sw"]}},
                               {"type": "translation", "sources": ["m"]}))


def test_missing_file_and_flores_guard(tmp_path):
    r = _recipe(tmp_path, {"a": {"type": "alpaca", "path": str(tmp_path / "none.json"), "lang": "en"}},
                {"type": "instructions", "sources": ["a"]})
    with pytest.raises(RecipeError, match=r"sources\.a\.path: file not found"):
        inventory.scan(r)


def test_scan_hashes_and_counts(tmp_path):
    f = write(tmp_path / "x.txt", "a\nb\nno newline")
    sha, lines = readers.scan_file(f)
    import hashlib

    assert sha == hashlib.sha256(f.read_bytes()).hexdigest() and lines == 3
