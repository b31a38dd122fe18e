"""The demo's summary (`summary.json`, typed) and report: one Markdown page with the score table, the plots and
the lineage chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class Exchange(BaseModel):
    """One live request to the served model and the parts of its answer the report shows."""

    request: dict[str, Any]
    response: dict[str, Any]


class ScoreRow(BaseModel):
    direction: str
    resource: str | None = None
    scores: dict[str, float | None]


class TrainStats(BaseModel):
    first_loss: float | None
    last_loss: float | None
    steps: int


class DatasetLink(BaseModel):
    path: str
    dataset_id: str
    stage_key: str


class CheckpointLink(BaseModel):
    run_dir: str
    export: str
    stage_key: str
    dataset_id: str | None
    step: int | None
    base_model: str | None


class DeploymentLink(BaseModel):
    model: str
    served_models: list[str]
    stage_key: str


class ScoresLink(BaseModel):
    run_dir: str
    stage_key: str


class AblationLink(BaseModel):
    dataset_id: str
    run_dir: str


class Lineage(BaseModel):
    """dataset manifest -> checkpoint -> deployment -> scores."""

    dataset: DatasetLink
    checkpoint: CheckpointLink
    deployment: DeploymentLink
    scores: dict[str, ScoresLink]
    ablation: AblationLink | None = None


class DemoSummary(BaseModel):
    """`summary.json` of a demo folder."""

    demo: str
    seconds: float
    stage_seconds: dict[str, float]
    train: TrainStats
    lineage: Lineage
    exchanges: list[Exchange]
    systems: dict[str, list[ScoreRow]]

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        if data["lineage"]["ablation"] is None:  # only the full profile has one
            del data["lineage"]["ablation"]
        return json.dumps(data, indent=2, ensure_ascii=False)



METRICS = (("chrf", "chrF", True), ("bleu", "BLEU", True), ("off_target", "off-target %", False))


def _score(rows: list[ScoreRow], direction: str, metric: str) -> float:
    row = next((r for r in rows if r.direction == direction), None)
    value = row.scores.get(metric) if row else None
    return float("nan") if value is None else float(value)


def _plot_scores(summary: DemoSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = summary.systems
    names = list(systems)
    directions = [r.direction for r in systems[names[0]]]
    x = np.arange(len(directions))
    width = 0.8 / len(names)
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(7.0, 0.9 * len(directions) + 2), 9), sharex=True)
    for ax, (metric, label, higher) in zip(axes, METRICS):
        for i, name in enumerate(names):
            vals = [_score(systems[name], d, metric) for d in directions]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.set_ylabel(label + (" ↑" if higher else " ↓"))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(names), fontsize=8)
    axes[-1].set_xticks(x, directions, rotation=30, ha="right")
    fig.suptitle(f"{summary.demo}: Flores-200 dev subset, per direction")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_loss(run_dir: Path, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (response tokens)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _mean(rows: list[ScoreRow], metric: str) -> float:
    vals = [float(v) for r in rows if (v := r.scores.get(metric)) is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def write_report(out: Path, summary: DemoSummary) -> Path:
    """`report.md` + `scores.png` (+ `loss.png`) in the demo folder; returns the Markdown path."""
    _plot_scores(summary, out / "scores.png")
    has_loss = _plot_loss(Path(summary.lineage.checkpoint.run_dir), out / "loss.png")
    systems = summary.systems
    names = list(systems)
    directions = [r.direction for r in systems[names[0]]]
    lines = [f"# xalign demo: {summary.demo}", "",
             f"This invocation took {summary.seconds:.0f} s (a stage reused from an earlier run costs nothing). "
             "Stage seconds when each ran: "
             + ", ".join(f"{k} {v:.0f}" for k, v in summary.stage_seconds.items()) + ".", ""]
    lines += ["## Scores (chrF / BLEU / off-target %)", "", "| direction | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for d in directions:
        cells = [" / ".join(f"{_score(systems[n], d, m):.1f}" for m, _, _ in METRICS) for n in names]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(" / ".join(f"{_mean(systems[n], m):.1f}" for m, _, _ in METRICS)
                                            for n in names) + " |")
    lines += ["", "![scores](scores.png)", ""]
    if has_loss:
        lines += ["## Training", "", f"Loss {summary.train.first_loss} → {summary.train.last_loss} over "
                  f"{summary.train.steps} steps.", "", "![loss](loss.png)", ""]
    lines += ["## Live translation requests (Ray Serve + vLLM)", ""]
    for ex in summary.exchanges:
        resp = ex.response
        asked = ex.request.get("text") or f"(follow-up) {ex.request.get('instruction')}"
        text = str(resp.get("translation"))
        text = text if len(text) <= 200 else text[:200] + " …"
        lines.append(f"- `{ex.request.get('target_lang')}` {asked!r} → {text!r} "
                     f"(output {resp.get('output_lang')}, off-target: {resp.get('off_target')})")
    lin = summary.lineage
    lines += ["", "## Lineage", "",
              f"1. dataset `{lin.dataset.dataset_id}` ({Path(lin.dataset.path).name})",
              f"2. checkpoint `{Path(lin.checkpoint.run_dir).name}` step {lin.checkpoint.step} "
              f"(trained on dataset `{lin.checkpoint.dataset_id}`, base `{lin.checkpoint.base_model}`)",
              f"3. deployment serving {', '.join(lin.deployment.served_models)}",
              "4. scores: " + ", ".join(f"{n} ({Path(s.run_dir).name})" for n, s in lin.scores.items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
