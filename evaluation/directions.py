"""Translation directions: parsing `de->en` / `de-en`, expanding groups (`en->X`, `X->zh`) over a language
set, and the canonical groups and resource level each direction is aggregated under.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cluster import languages
from cluster.languages import Language

# The four groups of BayLing 2 / x-LLaMA / xLLMs-100 reports; anything else is X->Y.
PIVOTS = ("en", "zh")
GROUP_PATTERN = re.compile(r"^\s*(?:(?P<src>[^-\s>]+)\s*->\s*X|X\s*->\s*(?P<tgt>[^-\s>]+))\s*$")
PAIR_PATTERN = re.compile(r"^\s*(?P<src>[^\s>]+?)\s*(?:->|-)\s*(?P<tgt>[^\s>-]+)\s*$")


class DirectionError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Direction:
    src: str  # Flores-200 code
    tgt: str

    @classmethod
    def of(cls, src: str | Language, tgt: str | Language) -> Direction:
        s, t = languages.get(src), languages.get(tgt)
        if s.flores == t.flores:
            raise DirectionError(f"direction {s.code}->{t.code}: source and target are the same language")
        return cls(s.flores, t.flores)

    @classmethod
    def parse(cls, text: str) -> Direction:
        """`de->en`, `de-en`, `deu_Latn-eng_Latn`, `German->English`."""
        m = PAIR_PATTERN.match(text)
        if not m:
            raise DirectionError(f"direction {text!r}: expected SRC->TGT or SRC-TGT")
        try:
            return cls.of(m["src"], m["tgt"])
        except languages.UnknownLanguageError as exc:
            raise DirectionError(f"direction {text!r}: {exc}") from None

    @property
    def source(self) -> Language:
        return languages.get(self.src)

    @property
    def target(self) -> Language:
        return languages.get(self.tgt)

    @property
    def key(self) -> str:
        """Short name used in file names and tables: `en-de`."""
        return f"{self.source.code}-{self.target.code}"

    @property
    def label(self) -> str:
        return f"{self.source.code}→{self.target.code}"

    @property
    def groups(self) -> tuple[str, ...]:
        """Every canonical group the direction belongs to (en->zh is in en->X and X->zh)."""
        s, t = self.source.code, self.target.code
        out = [f"{s}->X" for p in PIVOTS if s == p] + [f"X->{t}" for p in PIVOTS if t == p]
        return tuple(out) or ("X->Y",)

    @property
    def resource(self) -> str:
        """`low` when either side is a low-resource language: the side that limits quality."""
        return "low" if "low" in (self.source.resource, self.target.resource) else "high"


def resolve_languages(specs: Iterable[str], available: Iterable[str]) -> list[str]:
    """Flores codes for a language list; `high-resource` / `low-resource` mean those the test set has."""
    have = set(available)
    out: list[str] = []
    for spec in specs:
        if spec in ("high-resource", "low-resource"):
            level = spec.split("-")[0]
            picked = [lang.flores for lang in languages.by_resource(level) if lang.flores in have]
        else:
            try:
                picked = [languages.get(spec).flores]
            except languages.UnknownLanguageError as exc:
                raise DirectionError(f"languages: {exc}") from None
        out.extend(p for p in picked if p not in out)
    return out


def expand(specs: Iterable[str], langs: Iterable[str]) -> list[Direction]:
    """Directions for `directions:` entries, in order, without repeats."""
    langs = list(langs)
    out: list[Direction] = []
    for spec in specs:
        group = GROUP_PATTERN.match(spec)
        if group:
            if not langs:
                raise DirectionError(f"directions: group {spec!r} needs a non-empty languages: list")
            try:
                pivot = languages.get(group["src"] or group["tgt"]).flores
            except languages.UnknownLanguageError as exc:
                raise DirectionError(f"directions: {spec!r}: {exc}") from None
            found = [
                Direction(pivot, x) if group["src"] else Direction(x, pivot) for x in langs if x != pivot
            ]
        else:
            found = [Direction.parse(spec)]
        out.extend(d for d in found if d not in out)
    return out
