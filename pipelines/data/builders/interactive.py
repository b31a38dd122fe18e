"""Builder 3: interactive translation, multi-turn conversations from multi-way parallel text (BayLing).

Turn 1 translates a sentence; each follow-up either retargets ("now into <another language>", answered by
that language's line) or asks for a rewrite (formal, shorter) where the source folder has that rewrite for
the sentence. Follow-ups come from `prompts.follow_up`, the same wording serving understands.
"""

from __future__ import annotations

from collections.abc import Iterator

from cluster import prompts
from pipelines.data import seeding
from pipelines.data.builders.context import BuildContext, Unit, template_pool, turn
from pipelines.data.builders.parallel_text import ParallelRow, read_rows
from pipelines.data.recipe import InteractiveBuilder
from pipelines.data.schema import new_record


def conversation(row: ParallelRow, cfg: InteractiveBuilder, pivot: str, langs: list[str], rng, pool: list[int]):
    """(messages, checks, answer languages, follow-up kinds) of one conversation about `row`."""
    others = [x for x in langs if x != pivot]
    src = pivot if rng.random() < cfg.from_pivot_share else rng.choice(others)
    tgt = rng.choice([x for x in langs if x != src])
    template = rng.choice(pool)
    messages = [*prompts.translation_messages(src, tgt, row.texts[src], template), turn("assistant", row.texts[tgt])]
    checks = [["source", src, row.texts[src]], ["target", tgt, row.texts[tgt]]]
    used, done, kinds = {src, tgt}, set(), []
    for _ in range(cfg.turns - 1):
        options = []
        if any(x not in used for x in langs):
            options.append("retarget")
        options += [k for k in row.variants.get(tgt, {}) if k in cfg.follow_ups and (tgt, k) not in done]
        weights = [cfg.follow_ups[k] for k in options]
        if not options or not any(weights):
            break
        kind = rng.choices(options, weights)[0]
        if kind == "retarget":
            tgt = rng.choice([x for x in langs if x not in used])
            used.add(tgt)
            answer = row.texts[tgt]
        else:
            done.add((tgt, kind))
            answer = row.variants[tgt][kind]
        messages += [turn("user", prompts.follow_up(kind, tgt)), turn("assistant", answer)]
        checks.append(["target", tgt, answer])
        kinds.append(kind)
    return messages, checks, template, kinds


def build(unit: Unit, cfg: InteractiveBuilder, ctx: BuildContext) -> Iterator[dict]:
    info = ctx.infos[unit.source]
    pivot = ctx.recipe.sources[unit.source].pivot
    pool = template_pool(cfg.templates)
    for row in read_rows(info, unit.start, unit.stop):
        key = (unit.builder, unit.source, row.line)
        if cfg.share < 1 and seeding.uniform(ctx.seed, "share", *key) >= cfg.share:
            continue
        messages, checks, template, kinds = conversation(
            row, cfg, pivot, info.languages, seeding.rng(ctx.seed, "conversation", *key), pool
        )
        src, first = checks[0][1], checks[1][1]
        yield new_record(
            sample_id=f"{unit.builder}/{unit.source}/{row.line:06d}/{src}>{first}",
            kind="sft", builder=unit.builder, source=unit.source, source_file=row.files[src],
            source_index=row.line, lang=first, src_lang=src, messages=messages,
            detail=f"template={template};follow_ups={','.join(kinds) or 'none'}",
            checks=checks, dedup_text="\n".join(c[2] for c in checks),
        )
