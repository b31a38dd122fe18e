"""Builder 3: interactive translation, multi-turn conversations from multi-way parallel text (BayLing).

Turn 1 translates a sentence; each follow-up either retargets ("now into <another language>", answered by
that language's line) or asks for a rewrite. Follow-ups come from `prompts.follow_up`, the same wording
serving understands.

`shorter` is taught from the parallel text itself: multi-parallel news text (NTREX-128) is consecutive
sentences of articles, so a share of conversations (`lead_sentence`) translates a two-sentence passage of one
article, and its `shorter` follow-up is answered by the lead sentence alone in the same language (the lead-1
summary, a standard summarization baseline): always shorter, always in the language asked for. After that,
"it" is the shortened text, so a retarget answers with the lead sentence in the new language.

`formal` has no such source: it (and a rewrite-file `shorter` of a single sentence) is built only where the
source folder has a rewrite file for the sentence (`variants` of a multi-parallel source).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cluster import languages, prompts
from pipelines.data import seeding
from pipelines.data.builders.context import BuildContext, Unit, template_pool, turn
from pipelines.data.builders.parallel_text import ParallelRow, read_rows
from pipelines.data.recipe import InteractiveBuilder
from pipelines.data.schema import new_record

# A line that ends a sentence: final punctuation, optionally closed by quotes or brackets. Headlines do not,
# so requiring it of both pivot lines keeps a passage inside one article.
_SENTENCE_END = re.compile(r"[.!?…。！？।။።۔][\"'”’»)\]]*$")
# Scripts whose sentences follow each other without a space.
_UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan"})


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


def join_sentences(lang: str, first: str, second: str) -> str:
    sep = "" if languages.get(lang).script in _UNSPACED_SCRIPTS else " "
    return f"{first.strip()}{sep}{second.strip()}"


def passage_follower(row: ParallelRow, nxt: ParallelRow | None, pivot: str) -> ParallelRow | None:
    """`nxt` when `row` and `nxt` make a two-sentence passage of one article (judged on the pivot), else None."""
    if nxt is None or nxt.line != row.line + 1:
        return None
    if not all(r.texts.get(pivot) and ends_sentence(r.texts[pivot]) for r in (row, nxt)):
        return None
    if not all(t.strip() for r in (row, nxt) for t in r.texts.values()):
        return None
    return nxt


def conversation(row: ParallelRow, cfg: InteractiveBuilder, pivot: str, langs: list[str], rng, pool: list[int],
                 follower: ParallelRow | None = None):
    """(messages, checks, template, follow-up kinds) of one conversation about `row`.

    With `follower` (the next sentence of the same article) the conversation is about the two-sentence passage,
    and `shorter` is answered by `row` alone (the lead sentence).
    """
    if follower is None:
        texts, lead = row.texts, None
    else:
        texts = {x: join_sentences(x, row.texts[x], follower.texts[x]) for x in langs}
        lead = row.texts
    others = [x for x in langs if x != pivot]
    src = pivot if rng.random() < cfg.from_pivot_share else rng.choice(others)
    tgt = rng.choice([x for x in langs if x != src])
    template = rng.choice(pool)
    messages = [*prompts.translation_messages(src, tgt, texts[src], template), turn("assistant", texts[tgt])]
    checks = [["source", src, texts[src]], ["target", tgt, texts[tgt]]]
    used, done, kinds, shortened = {src, tgt}, set(), [], False
    for _ in range(cfg.turns - 1):
        options = []
        if any(x not in used for x in langs):
            options.append("retarget")
        if lead is None:
            options += [k for k in row.variants.get(tgt, {}) if k in cfg.follow_ups and (tgt, k) not in done]
        elif not shortened:
            options.append("shorter")
        weights = [cfg.follow_ups.get(k, 0.0) for k in options]
        if not options or not any(weights):
            break
        kind = rng.choices(options, weights)[0]
        if kind == "retarget":
            tgt = rng.choice([x for x in langs if x not in used])
            used.add(tgt)
            answer = texts[tgt]
        elif lead is not None:  # shorter: the lead sentence, which is what "it" means from now on
            texts, shortened = lead, True
            answer = texts[tgt]
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
    lead_share = cfg.lead_sentence if cfg.follow_ups.get("shorter", 0) > 0 else 0.0
    # One line past the unit: a passage may end in the next unit's first line (never past the source's limit).
    rows = read_rows(info, unit.start, min(unit.stop + 1, info.count) if lead_share else unit.stop)
    for i, row in enumerate(rows[: unit.stop - unit.start]):
        key = (unit.builder, unit.source, row.line)
        if cfg.share < 1 and seeding.uniform(ctx.seed, "share", *key) >= cfg.share:
            continue
        follower = None
        if lead_share and seeding.uniform(ctx.seed, "passage", *key) < lead_share:
            follower = passage_follower(row, rows[i + 1] if i + 1 < len(rows) else None, pivot)
        messages, checks, template, kinds = conversation(
            row, cfg, pivot, info.languages, seeding.rng(ctx.seed, "conversation", *key), pool, follower
        )
        src, first = checks[0][1], checks[1][1]
        lines = f"{row.line:06d}" if follower is None else f"{row.line:06d}-{follower.line:06d}"
        passage = "" if follower is None else ";passage=lead_sentence"
        yield new_record(
            sample_id=f"{unit.builder}/{unit.source}/{lines}/{src}>{first}",
            kind="sft", builder=unit.builder, source=unit.source, source_file=row.files[src],
            source_index=row.line, lang=first, src_lang=src, messages=messages,
            detail=f"template={template}{passage};follow_ups={','.join(kinds) or 'none'}",
            checks=checks, dedup_text="\n".join(c[2] for c in checks),
        )
