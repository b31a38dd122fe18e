"""Report tables as plain data (header + string cells), rendered by the Markdown and HTML writers."""

from __future__ import annotations

from typing import Any

LABELS = {"bleu": "BLEU", "chrf": "chrF", "chrf++": "chrF++", "ter": "TER", "comet": "COMET",
          "off_target": "off-target %", "repetition": "repetition %"}
LOWER_IS_BETTER = {"ter", "off_target", "repetition"}
RATES = {"off_target", "repetition"}  # % of segments flagged

Table = tuple[list[str], list[list[str]]]


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric == "comet":
        return f"{value:.4f}"
    if metric in RATES:
        return f"{value:.1f}"
    return f"{value:.2f}"


def metrics_of(doc: dict[str, Any]) -> list[str]:
    return list(doc["run"]["metrics"])


def primary_metric(doc: dict[str, Any]) -> str:
    names = metrics_of(doc)
    return next((m for m in ("bleu", "chrf", "chrf++", "comet") if m in names), names[0])


def direction_table(doc: dict[str, Any]) -> Table:
    metrics = metrics_of(doc)
    head = ["system", "direction", "groups", "resource", "segments", *[LABELS.get(m, m) for m in metrics]]
    order = {d: i for i, d in enumerate(doc["run"]["directions"])}
    primary = primary_metric(doc)
    sign = 1 if primary in LOWER_IS_BETTER else -1
    rows = sorted(doc["rows"], key=lambda r: (order.get(r["direction"], 0), sign * (r["scores"].get(primary) or 0)))
    body = [[r["system"], r["direction"], ", ".join(r["groups"]), r["resource"], str(r["segments"]),
             *[fmt(m, r["scores"].get(m)) for m in metrics]] for r in rows]
    return head, body


def aggregate_table(doc: dict[str, Any]) -> Table:
    metrics = metrics_of(doc)
    head = ["system", "average over", "directions", *[LABELS.get(m, m) for m in metrics]]
    body = []
    for a in doc["aggregates"]:
        name = {"all": "all directions", "high": "high-resource", "low": "low-resource"}.get(a["name"], a["name"])
        body.append([a["system"], name, str(a["directions"]), *[fmt(m, a["scores"].get(m)) for m in metrics]])
    return head, body


def identity_table(doc: dict[str, Any]) -> Table:
    head = ["system", "kind", "model", "fingerprint", "dataset manifest", "train run / step", "base model"]
    body = []
    for name, ident in doc["systems"].items():
        lin = ident.get("lineage") or {}
        train = f"{lin['run_id']} / {lin['step']}" if lin else "–"
        body.append([name, str(ident.get("kind")), str(ident.get("spec") or ident.get("path") or "–"),
                     str(ident.get("fingerprint") or "–"), str(ident.get("dataset_manifest_hash") or "–"), train,
                     str(lin.get("base_model") or "–")])
    return head, body


def confusion_table(doc: dict[str, Any], top: int = 3) -> Table:
    head = ["system", "direction", "off-target", "judged", "undetermined", "came out as (top)"]
    body = []
    for r in doc["rows"]:
        d = r["details"].get("off_target")
        if not d:
            continue
        tops = ", ".join(f"{lang} ×{n}" for lang, n in list(d["confusion"].items())[:top]) or "–"
        body.append([r["system"], r["direction"], str(d["off_target"]), str(d["judged"]), str(d["undetermined"]), tops])
    return head, body


def repetition_table(doc: dict[str, Any], top: int = 3) -> Table:
    """Directions with looping hypotheses: how many, and what repeats."""
    head = ["system", "direction", "looping", "hypotheses", "excused", "repeated units (first 3)"]
    body = []
    for r in doc["rows"]:
        d = r["details"].get("repetition")
        if not d or not d["looping"]:
            continue
        units = ", ".join(f"“{e['unit'].strip()[:40]}” ×{e['copies']:g}" for e in d["examples"][:top]) or "–"
        body.append([r["system"], r["direction"], str(d["looping"]), str(d["hypotheses"]), str(d["excused"]), units])
    return head, body


def signature_table(doc: dict[str, Any]) -> Table:
    seen: dict[tuple[str, str], list[str]] = {}
    for r in doc["rows"]:
        for m, sig in r["signatures"].items():
            seen.setdefault((m, sig), [])
            if r["direction"] not in seen[(m, sig)]:
                seen[(m, sig)].append(r["direction"])
    body = [[LABELS.get(m, m), sig, ", ".join(dirs)] for (m, sig), dirs in seen.items()]
    return ["metric", "signature", "directions"], body


def delta_table(doc: dict[str, Any], base: dict[str, Any], sig: dict[str, Any] | None = None) -> Table:
    """Per direction: baseline, this run and the difference for every shared metric (and p-values)."""
    metrics = [m for m in metrics_of(doc) if m in metrics_of(base)]
    b_rows = {r["direction"]: r for r in base["rows"]}
    head = ["direction"]
    for m in metrics:
        head += [f"{LABELS.get(m, m)} base", f"{LABELS.get(m, m)} new", "Δ"]
        if sig and m in sig.get("metrics", []):
            head.append("p")
    body = []
    for r in doc["rows"]:
        b = b_rows.get(r["direction"])
        if b is None:
            continue
        cells = [r["direction"]]
        for m in metrics:
            x, y = b["scores"].get(m), r["scores"].get(m)
            delta = None if x is None or y is None else y - x
            cells += [fmt(m, x), fmt(m, y), "–" if delta is None else f"{delta:+.2f}"]
            if sig and m in sig.get("metrics", []):
                p = sig["directions"].get(r["direction"], {}).get(m, {}).get("p_value")
                cells.append("–" if p is None else f"{p:.4f}")
        body.append(cells)
    return head, body
