"""Builder 4: cross-lingual tasks, the instruction in language A and the answer required in language B
(xLLMs-100), from instruction sets aligned by id (Alpaca EN/ZH).

The first source is iterated; the others are looked up by id. An item another set lacks is kept as a
rejected record (`unaligned`) rather than skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import permutations

from cluster import languages
from pipelines.data import readers, seeding
from pipelines.data.builders.context import BuildContext, Unit, turn
from pipelines.data.recipe import CrosslingualBuilder
from pipelines.data.schema import new_record, reject

# How the request names the answer language; the language name comes from `cluster.languages`.
DIRECTIVES: tuple[str, ...] = (
    "{instruction}\n\nAnswer in {lang}.",
    "{instruction}\n\nPlease write your answer in {lang}.",
    "Respond in {lang}.\n\n{instruction}",
    "{instruction}\n\n(Reply in {lang} only.)",
)


def aligned_versions(unit: Unit, sources: list[str], ctx: BuildContext) -> tuple[list, list[dict]]:
    """The unit's items and, per other source, (its file, its items by id)."""
    info, cfg = ctx.infos[unit.source], ctx.recipe.sources[unit.source]
    items = readers.read_instructions(info.files["main"].path, cfg.type, cfg.lang, unit.start, unit.stop)
    partners = []
    for name in sources:
        if name == unit.source:
            continue
        p_info, p_cfg = ctx.infos[name], ctx.recipe.sources[name]
        partners.append((p_info.files["main"], readers.instructions_by_id(
            p_info.files["main"].path, p_cfg.type, p_cfg.lang, p_info.count)))
    return items, partners


def build(unit: Unit, cfg: CrosslingualBuilder, ctx: BuildContext) -> Iterator[dict]:
    items, partners = aligned_versions(unit, cfg.sources, ctx)
    f = ctx.infos[unit.source].files["main"]
    for item in items:
        if cfg.share < 1 and seeding.uniform(ctx.seed, "share", unit.builder, unit.source, item.index) >= cfg.share:
            continue
        versions = {item.lang: item}
        base = dict(kind="sft", builder=unit.builder, source=unit.source, source_file=f.display,
                    source_index=item.index)
        for pf, by_id in partners:
            other = by_id.get(item.id)
            if other is None:
                yield reject(new_record(
                    sample_id=f"{unit.builder}/{unit.source}/{item.index:06d}/unaligned:{pf.display}", **base,
                    lang=item.lang, messages=[turn(r, c) for r, c in item.messages],
                ), "unaligned", "build", f"id {item.id!r} is not in {pf.display}")
            elif other.lang != item.lang:
                versions.setdefault(other.lang, other)
        pairs = list(permutations(sorted(versions), 2))
        rng = seeding.rng(ctx.seed, "crosslingual", unit.builder, unit.source, item.index)
        if cfg.directions_per_item is not None and cfg.directions_per_item < len(pairs):
            pairs = rng.sample(pairs, cfg.directions_per_item)
        for a, b in pairs:
            question, answer = versions[a], versions[b]
            d = rng.randrange(len(DIRECTIVES))
            request = DIRECTIVES[d].format(instruction=question.instruction, lang=languages.get(b).name)
            yield new_record(
                sample_id=f"{unit.builder}/{unit.source}/{item.index:06d}/{a}>{b}", **base, lang=b, src_lang=a,
                messages=[turn("user", request), turn("assistant", answer.output)],
                detail=f"directive={d};id={item.id}",
                checks=[["prompt", a, question.prompt_text], ["response", b, answer.output]],
                dedup_text=f"{question.instruction}\n{answer.output}",
            )
