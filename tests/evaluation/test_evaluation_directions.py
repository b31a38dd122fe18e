import pytest

from evaluation.directions import Direction, DirectionError, expand, resolve_languages


def test_parse_spellings():
    d = Direction.parse("de->en")
    assert d == Direction("deu_Latn", "eng_Latn") == Direction.parse("deu_Latn-eng_Latn")
    assert Direction.parse("German -> English") == d
    assert d.key == "de-en" and d.groups == ("X->en",) and d.resource == "high"
    with pytest.raises(DirectionError, match="klingon"):
        Direction.parse("klingon->en")
    with pytest.raises(DirectionError, match="same language"):
        Direction.parse("en->eng_Latn")


def test_groups_and_resource_levels():
    assert Direction.parse("en-zh").groups == ("en->X", "X->zh")
    assert Direction.parse("zh-en").groups == ("zh->X", "X->en")
    assert Direction.parse("de-fr").groups == ("X->Y",)
    assert Direction.parse("en-sw").resource == "low"
    assert Direction.parse("sw-zh").resource == "low"


def test_expand_groups_over_languages():
    langs = resolve_languages(["en", "zh", "de", "sw"], [])
    dirs = expand(["en->X", "X->en", "zh->X", "X->zh", "de-fr"], langs)
    keys = [d.key for d in dirs]
    assert keys == ["en-zh", "en-de", "en-sw", "zh-en", "de-en", "sw-en", "zh-de", "zh-sw", "de-zh", "sw-zh",
                    "de-fr"]  # en-zh once, although it is in en->X and X->zh


def test_resource_sets_take_what_the_test_set_has():
    have = ["eng_Latn", "deu_Latn", "swh_Latn", "yor_Latn", "kor_Hang"]
    assert resolve_languages(["low-resource"], have) == ["swh_Latn", "yor_Latn"]
    high = resolve_languages(["high-resource"], have)
    assert set(high) == {"eng_Latn", "deu_Latn", "kor_Hang"}
    with pytest.raises(DirectionError, match="needs a non-empty languages"):
        expand(["en->X"], [])
