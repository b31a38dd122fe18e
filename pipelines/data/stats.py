"""Counts and token statistics: computed per block or per shard, merged in the driver (small dicts only)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

KEPT = ""  # the reason column of records that survived


COUNT_KEYS = ("kind", "builder", "lang", "reject_reason", "reject_stage")


def _key(kind: str, builder: str, lang: str, reason: str | None, stage: str | None) -> tuple:
    return kind, builder, lang, reason or KEPT, stage or KEPT


def count_rows(rows: list[dict]) -> Counter:
    """(kind, builder, lang, reject reason or KEPT, stage or KEPT) -> records."""
    return Counter(_key(*(r[k] for k in COUNT_KEYS)) for r in rows)


def count_table(table) -> Counter:
    """`count_rows` as an Arrow aggregation: one Python tuple per key, not one dict per record."""
    keys = list(COUNT_KEYS)
    g = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    columns = [g.column(k).to_pylist() for k in keys]
    return Counter({_key(*key): n for *key, n in zip(*columns, g.column("count_all").to_pylist())})


def encode_counts(c: Counter) -> str:
    return json.dumps(sorted([*k, n] for k, n in c.items()))


def decode_counts(text: str) -> Counter:
    return Counter({tuple(item[:-1]): item[-1] for item in json.loads(text)})


def _nested(pairs) -> dict:
    out: dict = defaultdict(Counter)
    for a, b, n in pairs:
        out[a][b] += n
    return {a: dict(sorted(c.items())) for a, c in sorted(out.items())}


def summarize_counts(c: Counter) -> dict:
    """The manifest's record counts: built, rejected (by reason, stage, builder), and available after filters."""
    def total(pred, key):
        out = Counter()
        for k, n in c.items():
            if pred(k):
                out[key(k)] += n
        return dict(sorted(out.items()))

    kept = lambda k: k[3] == KEPT  # noqa: E731
    return {
        "built": sum(c.values()),
        "built_by_builder": total(lambda k: True, lambda k: k[1]),
        "built_by_language": total(lambda k: True, lambda k: k[2]),
        "rejected": sum(n for k, n in c.items() if not kept(k)),
        "rejected_by_reason": total(lambda k: not kept(k), lambda k: k[3]),
        "rejected_by_stage": total(lambda k: not kept(k), lambda k: k[4]),
        "rejected_by_builder": _nested((k[1], k[3], n) for k, n in c.items() if not kept(k)),
        "available_by_builder_language": _nested((k[1], k[2], n) for k, n in c.items() if kept(k)),
    }


def available(c: Counter, kind: str) -> dict[str, dict[str, int]]:
    return _nested((k[1], k[2], n) for k, n in c.items() if k[0] == kind and k[3] == KEPT)


def merge_shards(stats: list[dict], max_seq_len: int) -> dict:
    """Token statistics over SFT shards, packing efficiency included."""
    if not stats:
        return {"samples": 0, "rows": 0}
    real = sum(s["real_tokens"] for s in stats)
    slots = sum(s["slots"] for s in stats)
    samples = sum(s["samples"] for s in stats)
    hist = Counter()
    by_lang, by_builder = Counter(), Counter()
    for s in stats:
        hist.update(s["length_hist"])
        by_lang.update(s["by_lang"])
        by_builder.update(s["by_builder"])
    return {
        "samples": samples,
        "rows": sum(s["rows"] for s in stats),
        "max_seq_len": max_seq_len,
        "real_tokens": real,
        "trainable_tokens": sum(s["trainable_tokens"] for s in stats),
        "slots": slots,
        "packing_efficiency": round(real / slots, 6) if slots else 0.0,
        "mean_sample_tokens": round(real / samples, 3) if samples else 0.0,
        "max_sample_tokens": max(s["max_sample_tokens"] for s in stats),
        "sample_length_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0][2:]))),
        "samples_by_language": dict(sorted(by_lang.items())),
        "samples_by_builder": dict(sorted(by_builder.items())),
    }


def merge_pairs(stats: list[dict]) -> dict:
    by_lang, by_reason = Counter(), Counter()
    for s in stats:
        by_lang.update(s["by_lang"])
        by_reason.update(s["by_reason"])
    return {
        "pairs": sum(s["rows"] for s in stats),
        "tokens": sum(s["real_tokens"] for s in stats),
        "pairs_by_language": dict(sorted(by_lang.items())),
        "pairs_by_reason": dict(sorted(by_reason.items())),
    }


def merge_rl(stats: list[dict]) -> dict:
    by_direction = Counter()
    for s in stats:
        by_direction.update(s["by_direction"])
    prompts = sum(s["rows"] for s in stats)
    tokens = sum(s["real_tokens"] for s in stats)
    return {
        "prompts": prompts,
        "prompt_tokens": tokens,
        "mean_prompt_tokens": round(tokens / prompts, 3) if prompts else 0.0,
        "max_prompt_tokens": max((s["max_prompt_tokens"] for s in stats), default=0),
        "reference_tokens": sum(s["reference_tokens"] for s in stats),
        "prompts_by_direction": dict(sorted(by_direction.items())),
    }
