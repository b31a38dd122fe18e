"""Length bounds in characters on every checked field (token length is checked when tokenizing)."""

from __future__ import annotations

from pipelines.data.recipe import LengthFilter


def check(row: dict, checks: list[list[str]], cfg: LengthFilter) -> tuple[str, str, str] | None:
    fields = [(field, text) for field, _lang, text in checks]
    if row["kind"] == "dpo":
        fields += [("chosen", row["chosen"] or ""), ("rejected", row["rejected"] or "")]
    for field, text in fields:
        n = len(text.strip())
        if n < cfg.min_chars:
            return "too_short", "length", f"{field}: {n} characters < {cfg.min_chars}"
        if n > cfg.max_chars:
            return "too_long_chars", "length", f"{field}: {n} characters > {cfg.max_chars}"
    return None
