import pytest

from cluster import langid, languages
from cluster.locations import data_root


def _first_lines(code: str, n: int = 10) -> list[str]:
    with (data_root() / "ntrex128" / f"{code}.txt").open(encoding="utf-8") as fh:
        return [next(fh).strip() for _ in range(n)]


@pytest.mark.parametrize("code", ["eng_Latn", "deu_Latn", "zho_Hans", "zho_Hant", "swh_Latn", "yor_Latn",
                                  "khm_Khmr", "amh_Ethi", "wol_Latn", "jpn_Jpan"])
def test_real_sentences_are_on_target(code):
    verdicts = [langid.is_on_target(line, code) for line in _first_lines(code)]
    assert sum(v is True for v in verdicts) >= 8, verdicts


def test_wrong_language_is_off_target():
    german = _first_lines("deu_Latn", 5)
    assert all(langid.is_on_target(line, "fr") is False for line in german)
    det = langid.detect(german[0])
    assert det.flores == "deu_Latn" and det.confidence > 0.5


def test_too_short_is_undetermined():
    assert langid.is_on_target("OK", "de") is None
    assert langid.is_on_target("12345 !!", "en") is None
    assert langid.detect("").label is None


def test_unknown_target_is_an_error():
    with pytest.raises(languages.UnknownLanguageError):
        langid.is_on_target("Hallo Welt, wie geht es?", "klingon")
