"""Builder 2: translation instructions from parallel text (x-LLaMA).

Each (line, language pair) becomes one instruction in a direction drawn with `to_non_english_share` (the
share of pairs whose target is the non-pivot, usually non-English, side), or both directions. Instructions
come from `prompts.TRANSLATION_TEMPLATES`, a pool written in several languages that names the source and
target languages explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator

from cluster import prompts
from pipelines.data import seeding
from pipelines.data.builders.context import BuildContext, Unit, template_pool, translation_pairs, turn
from pipelines.data.builders.parallel_text import read_rows
from pipelines.data.recipe import TranslationBuilder
from pipelines.data.schema import new_record


def directions(pivot_side: str, other: str, cfg: TranslationBuilder, u: float) -> list[tuple[str, str]]:
    if cfg.both_directions:
        return [(pivot_side, other), (other, pivot_side)]
    return [(pivot_side, other)] if u < cfg.to_non_english_share else [(other, pivot_side)]


def build(unit: Unit, cfg: TranslationBuilder, ctx: BuildContext) -> Iterator[dict]:
    info = ctx.infos[unit.source]
    pairs = translation_pairs(info, cfg.languages, ctx.recipe.sources[unit.source].pivot)
    langs = sorted({x for pair in pairs for x in pair})
    pool = template_pool(cfg.templates)
    for row in read_rows(info, unit.start, unit.stop, langs):
        for a, b in pairs:
            key = (unit.builder, unit.source, row.line, a, b)
            if cfg.share < 1 and seeding.uniform(ctx.seed, "share", *key) >= cfg.share:
                continue
            for src, tgt in directions(a, b, cfg, seeding.uniform(ctx.seed, "direction", *key)):
                template = seeding.rng(ctx.seed, "template", *key, src).choice(pool)
                text, ref = row.texts[src], row.texts[tgt]
                yield new_record(
                    sample_id=f"{unit.builder}/{unit.source}/{row.line:06d}/{src}>{tgt}",
                    kind="sft", builder=unit.builder, source=unit.source, source_file=row.files[src],
                    source_index=row.line, lang=tgt, src_lang=src,
                    messages=[*prompts.translation_messages(src, tgt, text, template), turn("assistant", ref)],
                    detail=f"template={template}",
                    checks=[["source", src, text], ["target", tgt, ref]],
                    dedup_text=f"{text}\n{ref}",
                )
