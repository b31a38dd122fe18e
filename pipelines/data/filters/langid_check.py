"""Language ID per field against the declared language, through `cluster.langid`.

A field fails only when the identifier confidently names another language (`min_confidence`): short
answers, lists and code are often misjudged, and texts too short to judge pass. A preference pair's
off-target answer must in turn not be in the target language, or the pair teaches nothing.
"""

from __future__ import annotations

from cluster import langid
from pipelines.data.recipe import LangIdFilter


def check(checks: list[list[str]], cfg: LangIdFilter) -> tuple[str, str, str] | None:
    for field, lang, text in checks:
        if field not in cfg.fields:
            continue
        verdict = langid.is_on_target(text, lang)
        if field == "rejected":
            if verdict is True:
                return "rejected_on_target", "langid", f"rejected: the off-target answer reads as {lang}"
            continue
        if verdict is False:
            det = langid.detect(text)
            if det.confidence >= cfg.min_confidence:
                return "lang_mismatch", "langid", (
                    f"{field}: declared {lang}, detected {det.flores or det.label} ({det.confidence:.2f})"
                )
    return None
