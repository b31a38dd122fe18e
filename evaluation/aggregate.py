"""Averages per system over direction groups (en->X, X->en, zh->X, X->zh, X->Y), resource levels and all.

Scores are macro-averaged over directions, as BayLing 2, x-LLaMA and xLLMs-100 report them; the
off-target rate is also given pooled over segments (off-target / judged), which weights directions by
how many segments could be judged, and so is the repetition-loop rate (looping / hypotheses).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

GROUP_ORDER = ("en->X", "X->en", "zh->X", "X->zh", "X->Y")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    buckets: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        buckets[(row["system"], "all", "all")].append(row)
        for g in row["groups"]:
            buckets[(row["system"], "group", g)].append(row)
        buckets[(row["system"], "resource", row["resource"])].append(row)

    def order(key: tuple[str, str, str]) -> tuple:
        system, by, name = key
        rank = {"group": 0, "resource": 1, "all": 2}[by]
        sub = GROUP_ORDER.index(name) if name in GROUP_ORDER else (0 if name == "high" else 1)
        return (system, rank, sub)

    out = []
    for key in sorted(buckets, key=order):
        system, by, name = key
        members = buckets[key]
        metrics = list(dict.fromkeys(m for r in members for m in r["scores"]))
        scores = {m: _mean([r["scores"][m] for r in members if r["scores"].get(m) is not None]) for m in metrics}
        agg: dict[str, Any] = {"system": system, "by": by, "name": name, "directions": len(members),
                               "segments": sum(r["segments"] for r in members), "scores": scores}
        if "off_target" in metrics:
            details = [r["details"]["off_target"] for r in members]
            judged = sum(d["judged"] for d in details)
            off = sum(d["off_target"] for d in details)
            confusion: dict[str, int] = defaultdict(int)
            for d in details:
                for lang, n in d["confusion"].items():
                    confusion[lang] += n
            agg["off_target_pooled"] = {
                "rate": 100.0 * off / judged if judged else 0.0, "off_target": off, "judged": judged,
                "confusion": dict(sorted(confusion.items(), key=lambda kv: -kv[1])),
            }
        if "repetition" in metrics:
            looping = sum(r["details"]["repetition"]["looping"] for r in members)
            hyps = sum(r["details"]["repetition"]["hypotheses"] for r in members)
            agg["repetition_pooled"] = {"rate": 100.0 * looping / hyps if hyps else 0.0, "looping": looping,
                                        "hypotheses": hyps}
        out.append(agg)
    return out
