import pytest

from cluster import languages


@pytest.mark.parametrize("code", ["de", "deu", "deu_Latn", "German", "DEU_LATN", "ger"])
def test_spellings_resolve(code):
    assert languages.get(code).flores == "deu_Latn"


def test_chinese_and_aliases():
    assert languages.get("zh").flores == "zho_Hans"
    assert languages.get("zh-TW").flores == "zho_Hant"
    assert languages.get("swa").flores == "swh_Latn"


def test_unknown_code_names_value():
    with pytest.raises(languages.UnknownLanguageError, match="'xx_Yyyy'"):
        languages.get("xx_Yyyy")
    assert not languages.is_known("")


def test_table_covers_shared_data_languages():
    from cluster.locations import data_root

    root = data_root()
    codes = {p.stem for p in (root / "ntrex128").glob("*.txt")}
    assert codes and all(languages.is_known(c) for c in codes)
    assert {lang.resource for lang in languages.all_languages()} == {"high", "low"}
