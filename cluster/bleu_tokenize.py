"""Which sacrebleu tokenizer BLEU uses for a target language, shared by evaluation's BLEU and the GRPO BLEU reward.

As WMT does: `zh` for Chinese, `ja-mecab` for Japanese when MeCab is installed, `13a` elsewhere. Scripts written
without spaces (Thai, Lao, Khmer, Burmese, and Japanese without MeCab) fall back to `char`, since 13a would
treat a whole sentence as one word.
"""

from __future__ import annotations

import importlib.util
from functools import cache

_CHINESE = {"zho_Hans", "zho_Hant"}
_UNSEGMENTED = {"tha_Thai", "lao_Laoo", "khm_Khmr", "mya_Mymr"}


@cache
def mecab_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("MeCab", "ipadic"))


def auto_tokenizer(target: str) -> str:
    """The tokenizer for a Flores-200 target code (`deu_Latn` -> `13a`, `zho_Hans` -> `zh`)."""
    if target in _CHINESE:
        return "zh"
    if target == "jpn_Jpan":
        return "ja-mecab" if mecab_available() else "char"
    if target in _UNSEGMENTED:
        return "char"
    return "13a"
