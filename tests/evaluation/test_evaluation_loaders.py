"""Loaders on the real shared data and on malformed files (every error names the file and line)."""

from pathlib import Path

import pytest

from cluster.locations import data_root
from evaluation.directions import Direction
from evaluation.loaders import LoaderError, open_test_set, read_lines
from evaluation.recipe import EvalRecipe
from evaluation.suite import resolve

DATA = data_root()


def test_flores_subset_is_multi_parallel_with_flores_ids():
    ts = open_test_set("flores200", DATA / "flores200" / "dev_subset510")
    assert len(ts.languages()) == 39
    dd = ts.load(Direction.parse("en->sw"))
    assert len(dd) == 510 and dd.ids[0] == (DATA / "flores200/dev_subset510/ids.txt").read_text().split("\n")[0]
    assert dd.sources[5] == read_lines(DATA / "flores200/dev_subset510/eng_Latn.dev")[5]
    assert dd.references[0][5] == read_lines(DATA / "flores200/dev_subset510/swh_Latn.dev")[5]


def test_wmt22_primary_and_all_references():
    primary = open_test_set("wmt22", DATA / "wmt22").load(Direction.parse("en-de"))
    assert len(primary) == 2037 and len(primary.references) == 1
    both = open_test_set("wmt22", DATA / "wmt22", references="all").load(Direction.parse("en-de"))
    assert len(both.references) == 2 and both.references[0] == primary.references[0]
    assert both.references[1] == read_lines(DATA / "wmt22/en-de/ref.B.txt")


def test_ntrex_and_limit():
    dd = open_test_set("ntrex128", DATA / "ntrex128").load(Direction.parse("en->yo")).head(7)
    assert len(dd) == 7 and dd.total == 1997


def test_suite_resolution_and_unavailable_directions():
    recipe = EvalRecipe(name="t", test_set={"format": "wmt22", "path": "wmt22"}, directions=["en-de", "ja-en"])
    assert [d.key for d in resolve(recipe).directions] == ["en-de", "ja-en"]
    recipe = EvalRecipe(name="t", test_set={"format": "wmt22", "path": "wmt22"}, directions=["en-ja"])
    with pytest.raises(LoaderError, match="has no data for en-ja"):
        resolve(recipe)


def _flores(tmp_path: Path, en: str, de: str) -> Path:
    root = tmp_path / "flores"
    root.mkdir()
    (root / "eng_Latn.dev").write_bytes(en.encode() if isinstance(en, str) else en)
    (root / "deu_Latn.dev").write_bytes(de.encode() if isinstance(de, str) else de)
    return root


def test_misaligned_files_name_the_missing_line(tmp_path):
    root = _flores(tmp_path, "a\nb\nc\n", "x\ny\n")
    with pytest.raises(LoaderError, match=r"deu_Latn.dev: 2 lines but .*eng_Latn.dev has 3; .*deu_Latn.dev:3: missing"):
        open_test_set("flores200", root).load(Direction.parse("en-de"))


def test_empty_line_and_bad_utf8_name_file_and_line(tmp_path):
    root = _flores(tmp_path, "a\n\nc\n", "x\ny\nz\n")
    with pytest.raises(LoaderError, match=r"eng_Latn.dev:2: empty line"):
        open_test_set("flores200", root).load(Direction.parse("en-de"))
    (root / "eng_Latn.dev").write_bytes(b"a\nb\n\xff\xfe\n")
    with pytest.raises(LoaderError, match=r"eng_Latn.dev:3: not valid UTF-8"):
        open_test_set("flores200", root).load(Direction.parse("en-de"))


def test_unicode_line_separator_does_not_split_a_segment(tmp_path):
    root = _flores(tmp_path, "one\u2028still one\ntwo\n", "eins\nzwei\n")
    dd = open_test_set("flores200", root).load(Direction.parse("en-de"))
    assert dd.sources == ["one\u2028still one", "two"]


def test_generic_tsv(tmp_path):
    f = tmp_path / "set.tsv"
    f.write_text("id\tsrc_lang\ttgt_lang\tsource\treference\treference_2\n"
                 "a\ten\tde\tHello\tHallo\tServus\n"
                 "b\tde\ten\tDanke\tThanks\tThank you\n"
                 "c\ten\tde\tBye\tTschüss\tCiao\n", encoding="utf-8")
    ts = open_test_set("tsv", f)
    dd = ts.load(Direction.parse("en-de"))
    assert dd.ids == ["a", "c"] and dd.sources == ["Hello", "Bye"]
    assert dd.references == [["Hallo", "Tschüss"], ["Servus", "Ciao"]]
    f.write_text("src_lang\ttgt_lang\tsource\treference\nen\tde\tHello\tHallo\nen\tde\tBye\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"set.tsv:3: expected 4 tab-separated columns, got 3"):
        open_test_set("tsv", f)
    f.write_text("lang\tsource\nen\tHello\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"set.tsv:1: header must name"):
        open_test_set("tsv", f)


def test_generic_jsonl(tmp_path):
    f = tmp_path / "set.jsonl"
    f.write_text('{"src_lang": "en", "tgt_lang": "zh", "source": "Hi", "reference": ["你好", "嗨"]}\n'
                 '{"src_lang": "en", "tgt_lang": "zh", "source": "Bye", "reference": ["再见", "拜拜"]}\n',
                 encoding="utf-8")
    dd = open_test_set("jsonl", f).load(Direction.parse("en-zh"))
    assert dd.references == [["你好", "再见"], ["嗨", "拜拜"]] and dd.ids == ["1", "2"]
    cases = {
        '{"src_lang": "en", "tgt_lang": "zh", "source": "Hi", "reference": "你好"}\n{"src_lang": "en",\n':
            r"set.jsonl:2: invalid JSON",
        '{"src_lang": "en", "tgt_lang": "zh", "source": "Hi"}\n': r"set.jsonl:1: missing reference",
        '{"src_lang": "xx", "tgt_lang": "zh", "source": "Hi", "reference": "你好"}\n': r"set.jsonl:1: unknown language",
        '[1, 2]\n': r"set.jsonl:1: expected a JSON object",
        '{"src_lang": "en", "tgt_lang": "zh", "source": "Hi", "reference": "a"}\n'
        '{"src_lang": "en", "tgt_lang": "zh", "source": "Ho", "reference": ["a", "b"]}\n':
            r"set.jsonl:2: 2 references, earlier en-zh rows have 1",
    }
    for text, pattern in cases.items():
        f.write_text(text, encoding="utf-8")
        with pytest.raises(LoaderError, match=pattern):
            open_test_set("jsonl", f)
