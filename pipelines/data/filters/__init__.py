"""Record filters. A failing record is kept with its reason (see `schema.reject`), never dropped.

Per-record checks (length, language ID) and dedup signatures run in the parallel map stage; the dedup
decision itself needs every record of a language together and runs per group (see `dedup`).
"""

from __future__ import annotations

import json

from pipelines.data.filters import dedup, langid_check, length
from pipelines.data.recipe import Filters
from pipelines.data.schema import is_kept, reject


def apply_record_filters(rows: list[dict], cfg: Filters) -> list[dict]:
    for row in rows:
        if not is_kept(row):
            continue
        checks = json.loads(row["checks"] or "[]")
        failed = _same_answers(row) or length.check(row, checks, cfg.length)
        if failed is None and cfg.langid.enabled:
            failed = langid_check.check(checks, cfg.langid)
        if failed is not None:
            reject(row, failed[0], failed[1], failed[2])
    dedup.add_signatures(rows, cfg.dedup)
    return rows


def _same_answers(row: dict) -> tuple[str, str, str] | None:
    """A preference pair whose answers are the same text teaches nothing (aligned sets leave numbers and
    code untranslated)."""
    if row["kind"] == "dpo" and " ".join((row["chosen"] or "").split()) == " ".join((row["rejected"] or "").split()):
        return "rejected_equals_chosen", "pairs", "chosen and rejected are the same text"
    return None
