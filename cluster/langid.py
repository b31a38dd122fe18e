"""Language identification, shared by the data filters, the serving off-target guard and evaluation.

py3langid (142 labels) decides wherever it knows the language; pycld2 covers the ones it lacks
(Wolof among the shared-data languages). Texts too short to judge are reported as undetermined
rather than guessed, so filters and off-target counts never act on noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from cluster import languages
from cluster.languages import Language

MIN_LETTERS = 4  # fewer letters than this: no verdict

# py3langid labels that mean the same table entry (Traditional Chinese comes out as zh or yue).
_EQUIVALENT = {"zho_Hant": {"zh", "yue"}, "zho_Hans": {"zh"}}


@dataclass(frozen=True)
class Detection:
    label: str | None  # the identifier's own label, None when undetermined
    flores: str | None  # the table's Flores code for that label, when the table has it
    confidence: float


@cache
def _identifier():
    from py3langid.langid import _load_identifier

    return _load_identifier(norm_probs=True)


@cache
def _py3_labels() -> frozenset[str]:
    return frozenset(_identifier().nb_classes)


def _letters(text: str) -> int:
    return len(re.findall(r"[^\W\d_]", text))


def _to_flores(label: str) -> str | None:
    try:
        return languages.get(label).flores
    except languages.UnknownLanguageError:
        return None


def detect(text: str) -> Detection:
    if _letters(text) < MIN_LETTERS:
        return Detection(None, None, 0.0)
    label, prob = _identifier().classify(text)
    return Detection(label, _to_flores(label), float(prob))


def _cld2(text: str) -> str | None:
    import pycld2

    try:
        _, _, details = pycld2.detect(text, bestEffort=True)
    except pycld2.error:  # invalid UTF-8 surrogates and the like
        return None
    code = details[0][1]
    return None if code in ("un", "xxx") else code


def accepted_labels(target: str | Language) -> set[str]:
    lang = languages.get(target)
    labels = {x for x in (lang.iso1, lang.iso3) if x}
    return labels | _EQUIVALENT.get(lang.flores, set())


def is_on_target(text: str, target: str | Language) -> bool | None:
    """True/False when the text can be judged, None when it is too short to tell."""
    if _letters(text) < MIN_LETTERS:
        return None
    accepted = accepted_labels(target)
    if accepted & _py3_labels():
        det = detect(text)
        return det.label in accepted
    code = _cld2(text)  # languages py3langid does not know
    return None if code is None else code in accepted
