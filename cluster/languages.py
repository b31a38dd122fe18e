"""The one language table: codes, names, scripts and resource levels.

Accepts ISO 639-1 (`de`), ISO 639-3 (`deu`) and Flores-200 (`deu_Latn`) codes and English names
everywhere (recipes, API, suites). Resource levels follow the Flores-200 split used by the shared
data (`../shared/data/README.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Language:
    flores: str  # Flores-200 code, e.g. deu_Latn: the canonical key
    iso1: str | None  # ISO 639-1, None when the language has none
    iso3: str  # ISO 639-3
    name: str  # English name, used in prompts
    native: str  # name in the language itself, used in native-language templates
    resource: str  # "high" or "low"

    @property
    def script(self) -> str:
        return self.flores.split("_", 1)[1]

    @property
    def code(self) -> str:
        """Short code for reports and API answers: ISO 639-1 where one exists."""
        return self.iso1 or self.iso3


_TABLE: tuple[Language, ...] = (
    Language("eng_Latn", "en", "eng", "English", "English", "high"),
    Language("zho_Hans", "zh", "zho", "Chinese", "中文", "high"),
    Language("zho_Hant", None, "zht", "Traditional Chinese", "繁體中文", "high"),
    Language("deu_Latn", "de", "deu", "German", "Deutsch", "high"),
    Language("fra_Latn", "fr", "fra", "French", "français", "high"),
    Language("spa_Latn", "es", "spa", "Spanish", "español", "high"),
    Language("rus_Cyrl", "ru", "rus", "Russian", "русский", "high"),
    Language("jpn_Jpan", "ja", "jpn", "Japanese", "日本語", "high"),
    Language("arb_Arab", "ar", "arb", "Arabic", "العربية", "high"),
    Language("por_Latn", "pt", "por", "Portuguese", "português", "high"),
    Language("ita_Latn", "it", "ita", "Italian", "italiano", "high"),
    Language("kor_Hang", "ko", "kor", "Korean", "한국어", "high"),
    Language("vie_Latn", "vi", "vie", "Vietnamese", "Tiếng Việt", "high"),
    Language("ces_Latn", "cs", "ces", "Czech", "čeština", "high"),
    Language("isl_Latn", "is", "isl", "Icelandic", "íslenska", "high"),
    Language("ukr_Cyrl", "uk", "ukr", "Ukrainian", "українська", "high"),
    Language("hin_Deva", "hi", "hin", "Hindi", "हिन्दी", "high"),
    Language("ben_Beng", "bn", "ben", "Bengali", "বাংলা", "high"),
    Language("tha_Thai", "th", "tha", "Thai", "ไทย", "high"),
    Language("ind_Latn", "id", "ind", "Indonesian", "Bahasa Indonesia", "high"),
    Language("tur_Latn", "tr", "tur", "Turkish", "Türkçe", "high"),
    Language("nld_Latn", "nl", "nld", "Dutch", "Nederlands", "high"),
    Language("pol_Latn", "pl", "pol", "Polish", "polski", "high"),
    Language("swe_Latn", "sv", "swe", "Swedish", "svenska", "high"),
    Language("fin_Latn", "fi", "fin", "Finnish", "suomi", "high"),
    Language("bul_Cyrl", "bg", "bul", "Bulgarian", "български", "high"),
    Language("nob_Latn", "no", "nob", "Norwegian", "norsk", "high"),
    Language("swh_Latn", "sw", "swh", "Swahili", "Kiswahili", "low"),
    Language("yor_Latn", "yo", "yor", "Yoruba", "Yorùbá", "low"),
    Language("npi_Deva", "ne", "npi", "Nepali", "नेपाली", "low"),
    Language("khm_Khmr", "km", "khm", "Khmer", "ខ្មែរ", "low"),
    Language("amh_Ethi", "am", "amh", "Amharic", "አማርኛ", "low"),
    Language("hau_Latn", "ha", "hau", "Hausa", "Hausa", "low"),
    Language("zul_Latn", "zu", "zul", "Zulu", "isiZulu", "low"),
    Language("tel_Telu", "te", "tel", "Telugu", "తెలుగు", "low"),
    Language("mya_Mymr", "my", "mya", "Burmese", "မြန်မာ", "low"),
    Language("ibo_Latn", "ig", "ibo", "Igbo", "Igbo", "low"),
    Language("lao_Laoo", "lo", "lao", "Lao", "ລາວ", "low"),
    Language("sin_Sinh", "si", "sin", "Sinhala", "සිංහල", "low"),
    Language("tam_Taml", "ta", "tam", "Tamil", "தமிழ்", "low"),
    Language("urd_Arab", "ur", "urd", "Urdu", "اردو", "low"),
    Language("xho_Latn", "xh", "xho", "Xhosa", "isiXhosa", "low"),
    Language("som_Latn", "so", "som", "Somali", "Soomaali", "low"),
    Language("kin_Latn", "rw", "kin", "Kinyarwanda", "Ikinyarwanda", "low"),
    Language("wol_Latn", "wo", "wol", "Wolof", "Wolof", "low"),
)

# Extra spellings users send: macro-language and legacy codes mapped to the table's entries.
_ALIASES = {
    "cmn": "zho_Hans", "zh-cn": "zho_Hans", "zh-hans": "zho_Hans", "chi": "zho_Hans",
    "zh-tw": "zho_Hant", "zh-hant": "zho_Hant", "ara": "arb_Arab", "swa": "swh_Latn",
    "nep": "npi_Deva", "ger": "deu_Latn", "fre": "fra_Latn", "cze": "ces_Latn", "ice": "isl_Latn",
    "nor": "nob_Latn", "nb": "nob_Latn", "dut": "nld_Latn", "bur": "mya_Mymr",
}


class UnknownLanguageError(ValueError):
    def __init__(self, value: str) -> None:
        super().__init__(
            f"unknown language code {value!r}: use ISO 639-1 (de), ISO 639-3 (deu), Flores-200 (deu_Latn) "
            "or an English name"
        )
        self.value = value


@cache
def _index() -> dict[str, Language]:
    idx: dict[str, Language] = {}
    for lang in _TABLE:
        for key in (lang.flores, lang.iso3, lang.iso1, lang.name):
            if key:
                idx[key.lower()] = lang
    for alias, flores in _ALIASES.items():
        idx[alias] = idx[flores.lower()]
    return idx


def get(code: str | Language) -> Language:
    """Resolve any accepted spelling to its Language; raises UnknownLanguageError."""
    if isinstance(code, Language):
        return code
    if not isinstance(code, str) or not code.strip():
        raise UnknownLanguageError(str(code))
    lang = _index().get(code.strip().replace("-", "_").lower()) or _index().get(code.strip().lower())
    if lang is None:
        raise UnknownLanguageError(code)
    return lang


def is_known(code: str) -> bool:
    try:
        get(code)
    except UnknownLanguageError:
        return False
    return True


def all_languages() -> tuple[Language, ...]:
    return _TABLE


def by_resource(level: str) -> list[Language]:
    return [lang for lang in _TABLE if lang.resource == level]
