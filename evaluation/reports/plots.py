"""Report plots (matplotlib, Agg): per-language bars, base-vs-tuned deltas, off-target and repetition-loop rates.
Each returns PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from evaluation.aggregate import GROUP_ORDER
from evaluation.reports.tables import LABELS, LOWER_IS_BETTER


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _grouped_bars(ax: Any, labels: Sequence[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    import numpy as np

    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(labels))
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    for i, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=name, color=cmap(i % cmap.N))
    ax.set_xticks(x, labels, rotation=60 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center",
                  fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if n == 1:  # keep a lone bar from filling the whole panel
        pad = max(0.0, (4 - len(labels)) / 2)
        ax.set_xlim(-0.6 - pad, len(labels) - 0.4 + pad)
    else:  # outside the axes: many systems would cover the bars
        ax.legend(fontsize=7, ncol=1 if n <= 12 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _figure(rows: int, width: float = 10.0, height: float = 2.8) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(width, height * rows), squeeze=False, layout="constrained")
    return fig, [a[0] for a in axes]


def _groups(doc: dict[str, Any]) -> list[str]:
    present = {g for r in doc["rows"] for g in r["groups"]}
    return [g for g in GROUP_ORDER if g in present]


def per_language_bars(doc: dict[str, Any], metric: str) -> bytes:
    """One panel per direction group; one bar per direction (per system when several were scored)."""
    groups = _groups(doc)
    fig, axes = _figure(len(groups))
    systems = list(doc["systems"])
    for ax, group in zip(axes, groups):
        keys = [d for d in doc["run"]["directions"] if any(r["direction"] == d and group in r["groups"]
                                                            for r in doc["rows"])]
        lookup = {(r["system"], r["direction"]): r["scores"].get(metric) for r in doc["rows"]}
        _grouped_bars(ax, keys, {s: [lookup.get((s, k)) for k in keys] for s in systems}, LABELS.get(metric, metric))
        ax.set_title(f"{LABELS.get(metric, metric)} — {group}", fontsize=10)
    return _png(fig)


RATE_PLOTS = {"off_target": ("off-target % (of judged)", "Off-target rate"),
              "repetition": ("looping % (of hypotheses)", "Repetition-loop rate")}


def rate_bars(doc: dict[str, Any], metric: str) -> bytes:
    """A % of segments flagged (off-target, repetition loops): one panel, every direction."""
    ylabel, title = RATE_PLOTS[metric]
    fig, axes = _figure(1, height=3.2)
    keys = list(doc["run"]["directions"])
    lookup = {(r["system"], r["direction"]): r["scores"].get(metric) for r in doc["rows"]}
    series = {s: [lookup.get((s, k)) for k in keys] for s in doc["systems"]}
    _grouped_bars(axes[0], keys, series, ylabel)
    axes[0].set_title(f"{title} per direction (lower is better)", fontsize=10)
    return _png(fig)


def off_target_bars(doc: dict[str, Any]) -> bytes:
    return rate_bars(doc, "off_target")


def delta_bars(doc: dict[str, Any], base: dict[str, Any], metric: str, base_label: str, new_label: str) -> bytes:
    """new − base per direction; green where the new run is better (for TER and the rates: lower)."""
    b = {r["direction"]: r["scores"].get(metric) for r in base["rows"]}
    keys = [r["direction"] for r in doc["rows"] if b.get(r["direction"]) is not None
            and r["scores"].get(metric) is not None]
    deltas = [next(r for r in doc["rows"] if r["direction"] == k)["scores"][metric] - b[k] for k in keys]
    lower_better = metric in LOWER_IS_BETTER
    colors = ["tab:green" if (d < 0 if lower_better else d > 0) else "tab:red" for d in deltas]
    fig, axes = _figure(1, height=3.2)
    ax = axes[0]
    ax.bar(range(len(keys)), deltas, color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(keys)), keys, rotation=60 if len(keys) > 8 else 0, fontsize=8,
                  ha="right" if len(keys) > 8 else "center")
    ax.set_ylabel(f"Δ {LABELS.get(metric, metric)}")
    ax.set_title(f"{LABELS.get(metric, metric)}: {new_label} − {base_label}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
