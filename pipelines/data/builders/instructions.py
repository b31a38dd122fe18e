"""Builder 1: high-resource instructions as they are (BayLing 2 keeps its English and Chinese data whole)."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.data import readers, seeding
from pipelines.data.builders.context import BuildContext, Unit, turn
from pipelines.data.recipe import InstructionsBuilder
from pipelines.data.schema import new_record


def build(unit: Unit, cfg: InstructionsBuilder, ctx: BuildContext) -> Iterator[dict]:
    info, src = ctx.infos[unit.source], ctx.recipe.sources[unit.source]
    f = info.files["main"]
    for item in readers.read_instructions(f.path, src.type, src.lang, unit.start, unit.stop):
        if cfg.share < 1 and seeding.uniform(ctx.seed, "share", unit.builder, unit.source, item.index) >= cfg.share:
            continue
        yield new_record(
            sample_id=f"{unit.builder}/{unit.source}/{item.index:06d}",
            kind="sft", builder=unit.builder, source=unit.source, source_file=f.display, source_index=item.index,
            lang=item.lang, src_lang=item.lang,
            messages=[turn(r, c) for r, c in item.messages],
            checks=[["prompt", item.lang, item.prompt_text], ["response", item.lang, item.output]],
            dedup_text=f"{item.instruction}\n{item.output}",
        )
