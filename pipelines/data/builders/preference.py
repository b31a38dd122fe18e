"""Builder 5: cross-lingual preference pairs for DPO (xLLMs-100's feedback, simulated from parallel data).

chosen is the correct-language answer (the reference translation, or the aligned answer in the prompt's
language); rejected is the same content in a wrong language (`off_target`: the source copied back, another
language's reference, or the aligned answer in the other language) or a degraded translation (`degraded`:
truncated, words dropped, or shuffled). Preference files pass through with their own labels. The language
filter later checks that an off-target answer really is off target.
"""

from __future__ import annotations

from collections.abc import Iterator

from cluster import languages, prompts
from pipelines.data import readers, seeding
from pipelines.data.builders.context import BuildContext, Unit, template_pool, translation_pairs, turn
from pipelines.data.builders.crosslingual import aligned_versions
from pipelines.data.builders.parallel_text import read_rows
from pipelines.data.recipe import PARALLEL_TYPES, PreferenceBuilder
from pipelines.data.schema import new_record, reject

UNSPACED_SCRIPTS = {"Hans", "Hant", "Jpan", "Thai", "Laoo", "Khmr", "Mymr"}


def degrade(text: str, lang: str, rng) -> tuple[str, str] | None:
    """A visibly worse version of a translation and how it was made; None when the text is too short."""
    unspaced = languages.get(lang).script in UNSPACED_SCRIPTS
    units = list(text) if unspaced else text.split()
    if len(units) < 4:
        return None
    how = rng.choice(("truncated", "dropped_words", "shuffled"))
    if how == "truncated":
        out = units[: max(1, int(len(units) * rng.uniform(0.3, 0.6)))]
    elif how == "dropped_words":
        drop = set(rng.sample(range(len(units)), max(1, int(len(units) * 0.35))))
        out = [u for i, u in enumerate(units) if i not in drop]
    else:
        out = units[:]
        for _ in range(max(2, len(out) // 3)):
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    degraded = ("" if unspaced else " ").join(out)
    return (degraded, how) if degraded != text else None


def _choose_reason(cfg: PreferenceBuilder, rng, allowed: tuple[str, ...]) -> str | None:
    options = [(k, w) for k, w in cfg.reasons.items() if k in allowed and w > 0]
    if not options:
        return None
    return rng.choices([k for k, _ in options], [w for _, w in options])[0]


def _from_parallel(unit: Unit, cfg: PreferenceBuilder, ctx: BuildContext) -> Iterator[dict]:
    info = ctx.infos[unit.source]
    pairs = translation_pairs(info, None, ctx.recipe.sources[unit.source].pivot)
    pool = template_pool(cfg.templates)
    for row in read_rows(info, unit.start, unit.stop):
        for a, b in pairs:
            key = (unit.builder, unit.source, row.line, a, b)
            if cfg.share < 1 and seeding.uniform(ctx.seed, "share", *key) >= cfg.share:
                continue
            rng = seeding.rng(ctx.seed, "preference", *key)
            src, tgt = (a, b) if rng.random() < cfg.to_non_english_share else (b, a)
            text, ref = row.texts[src], row.texts[tgt]
            template = rng.choice(pool)
            base = dict(
                sample_id=f"{unit.builder}/{unit.source}/{row.line:06d}/{src}>{tgt}", kind="dpo", builder=unit.builder,
                source=unit.source, source_file=row.files[src], source_index=row.line, lang=tgt, src_lang=src,
                messages=prompts.translation_messages(src, tgt, text, template), chosen=ref,
            )
            reason = _choose_reason(cfg, rng, ("off_target", "degraded"))
            made = degrade(ref, tgt, rng) if reason == "degraded" else None
            if reason == "degraded" and made is None:
                yield reject(new_record(**base, pref_reason="degraded"), "too_short_to_degrade", "build",
                             f"{len(ref)} characters")
                continue
            if reason == "degraded":
                rejected, how = made
                rejected_lang, checks = tgt, [["source", src, text], ["target", tgt, ref]]
            else:
                wrong = rng.choice([x for x in sorted(row.texts) if x != tgt])
                rejected, rejected_lang = row.texts[wrong], wrong
                how = "source_copy" if wrong == src else "other_language"
                checks = [["source", src, text], ["target", tgt, ref], ["rejected", tgt, rejected]]
            yield new_record(
                **base, rejected=rejected, pref_reason=reason, rejected_lang=rejected_lang,
                detail=f"template={template};rejected={how}", checks=checks, dedup_text=f"{text}\n{ref}",
            )


def _from_instructions(unit: Unit, cfg: PreferenceBuilder, ctx: BuildContext) -> Iterator[dict]:
    others = [s for s in cfg.sources if ctx.recipe.sources[s].type in ("alpaca", "chat")]
    items, partners = aligned_versions(unit, others, ctx)
    f = ctx.infos[unit.source].files["main"]
    for item in items:
        key = (unit.builder, unit.source, item.index)
        if cfg.share < 1 and seeding.uniform(ctx.seed, "share", *key) >= cfg.share:
            continue
        rng = seeding.rng(ctx.seed, "preference", *key)
        wrong = [(pf, by_id[item.id]) for pf, by_id in partners
                 if item.id in by_id and by_id[item.id].lang != item.lang]
        base = dict(
            sample_id=f"{unit.builder}/{unit.source}/{item.index:06d}", kind="dpo", builder=unit.builder,
            source=unit.source, source_file=f.display, source_index=item.index, lang=item.lang, src_lang=item.lang,
            messages=[turn(r, c) for r, c in item.messages[:-1]], chosen=item.output, pref_reason="off_target",
        )
        if not wrong:
            yield reject(new_record(**base), "unaligned", "build",
                         f"id {item.id!r} has no other-language version in {[pf.display for pf, _ in partners]}")
            continue
        _pf, other = rng.choice(wrong)
        yield new_record(
            **base, rejected=other.output, rejected_lang=other.lang, detail=f"rejected=aligned_answer;id={item.id}",
            checks=[["prompt", item.lang, item.prompt_text], ["response", item.lang, item.output],
                    ["rejected", item.lang, other.output]],
            dedup_text=f"{item.instruction}\n{item.output}",
        )


def _from_file(unit: Unit, ctx: BuildContext) -> Iterator[dict]:
    info, src = ctx.infos[unit.source], ctx.recipe.sources[unit.source]
    f = info.files["main"]
    for rec in readers.read_preferences(f.path, src.lang, unit.start, unit.stop):
        yield new_record(
            sample_id=f"{unit.builder}/{unit.source}/{rec.index:06d}", kind="dpo", builder=unit.builder,
            source=unit.source, source_file=f.display, source_index=rec.index, lang=rec.lang,
            messages=[turn(r, c) for r, c in rec.prompt], chosen=rec.chosen, rejected=rec.rejected,
            pref_reason=rec.reason, detail=f"id={rec.id}",
            checks=[["response", rec.lang, rec.chosen]],
            dedup_text="\n".join([*(c for _, c in rec.prompt), rec.chosen, rec.rejected]),
        )


def build(unit: Unit, cfg: PreferenceBuilder, ctx: BuildContext) -> Iterator[dict]:
    kind = ctx.recipe.sources[unit.source].type
    if kind in PARALLEL_TYPES:
        yield from _from_parallel(unit, cfg, ctx)
    elif kind == "preference":
        yield from _from_file(unit, ctx)
    elif "off_target" in cfg.reasons and cfg.reasons["off_target"] > 0:
        yield from _from_instructions(unit, cfg, ctx)
