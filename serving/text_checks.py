"""Checks on request text that the engine would otherwise fail on, or answer with nonsense.

JSON may carry lone surrogate code points (`"\\ud800"`): Python decodes them into a `str` that cannot be
encoded as UTF-8, so the tokenizer (or the engine's transport) fails with a 500. A text of only invisible
characters (zero-width spaces, a byte-order mark, combining marks, controls) is empty to a reader but not to
the model, which then "translates" the prompt itself.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Unicode categories that carry no visible text on their own: controls, format characters (zero-width
# space/joiners, BOM, bidi marks), separators, and combining marks with nothing to combine with.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})


def is_blank(text: str) -> bool:
    """True when nothing is left of `text` once whitespace and invisible characters are removed."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)


def first_unencodable(value: Any, path: str = "") -> tuple[str, int] | None:
    """(field path, character index) of the first string inside `value` that UTF-8 cannot encode (a lone
    surrogate), walking dicts and lists the way request bodies nest; None when all of it is encodable."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return path, exc.start
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        if isinstance(key, str):
            try:
                key.encode("utf-8")
            except UnicodeEncodeError as exc:
                return path or "body", exc.start
        sub = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        found = first_unencodable(item, sub)
        if found is not None:
            return found
    return None


def check_encodable(data: Any) -> Any:
    """A `model_validator(mode="before")` body: refuse lone surrogates anywhere, naming the field."""
    found = first_unencodable(data)
    if found is not None:
        path, index = found
        raise ValueError(f"{path or 'body'}: character {index} is a lone surrogate (U+D800..U+DFFF), which is not "
                         "valid Unicode text")
    return data
