"""Builder 6: translation prompts with their references for RL (GRPO with translation rewards).

One record per (sentence, direction): the prompt is `prompts.translation_messages` with the recipe's template
(0, the one serving and evaluation send, by default), and the reference is the target side of the same line.
There is no answer to train on: the policy writes it and the rewards compare it with the reference.

`per_direction` caps each direction's sentences by a seeded rank over the whole source, so a unit of lines
knows which of its lines are drawn without seeing the others, and the draw does not depend on the units.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from cluster import prompts
from pipelines.data import seeding
from pipelines.data.builders.context import BuildContext, Unit
from pipelines.data.builders.parallel_text import read_rows
from pipelines.data.inventory import SourceInfo
from pipelines.data.recipe import RlBuilder
from pipelines.data.schema import new_record


def directions(cfg: RlBuilder, info: SourceInfo) -> list[tuple[str, str]]:
    """The builder's (src, tgt) pairs on this source; a language the source lacks is a ValueError."""
    pairs = cfg.pairs(info.languages)
    missing = sorted({x for pair in pairs for x in pair} - set(info.languages))
    if missing:
        raise ValueError(f"languages {missing} are not in source {info.name!r} ({', '.join(info.languages)})")
    return pairs


@lru_cache(maxsize=1024)
def drawn_lines(seed: int, builder: str, source: str, count: int, src: str, tgt: str, share: float,
                cap: int | None, skip: int = 0) -> frozenset[int]:
    """The 1-based lines one direction uses: those after `skip` and within `share`, then the `cap` lowest-ranked
    of them."""
    key = (builder, source)
    lines = [n for n in range(skip + 1, count + 1)
             if share >= 1 or seeding.uniform(seed, "share", *key, n, src, tgt) < share]
    if cap is not None and cap < len(lines):
        lines = sorted(lines, key=lambda n: (seeding.uniform(seed, "rl", *key, n, src, tgt), n))[:cap]
    return frozenset(lines)


def build(unit: Unit, cfg: RlBuilder, ctx: BuildContext) -> Iterator[dict]:
    info = ctx.infos[unit.source]
    pairs = directions(cfg, info)
    drawn = {(src, tgt): drawn_lines(ctx.seed, unit.builder, unit.source, info.count, src, tgt, cfg.share,
                                     cfg.per_direction, cfg.skip_lines)
             for src, tgt in pairs}
    if not any(unit.start < n <= unit.stop for lines in drawn.values() for n in lines):
        return  # nothing of this unit is drawn: skip reading it
    langs = sorted({x for pair in pairs for x in pair})
    for row in read_rows(info, unit.start, unit.stop, langs):
        for src, tgt in pairs:
            if row.line not in drawn[src, tgt]:
                continue
            text, ref = row.texts[src], row.texts[tgt]
            yield new_record(
                sample_id=f"{unit.builder}/{unit.source}/{row.line:06d}/{src}>{tgt}",
                kind="rl", builder=unit.builder, source=unit.source, source_file=row.files[src],
                source_index=row.line, lang=tgt, src_lang=src,
                messages=prompts.translation_messages(src, tgt, text, cfg.template),
                reference=ref, source_text=text, detail=f"template={cfg.template}",
                checks=[["source", src, text], ["target", tgt, ref]],
                dedup_text=f"{text}\n{ref}",
            )
