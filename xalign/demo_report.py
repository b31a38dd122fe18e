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
    run_dir: str | None = None
    reward_margin: float | None = None  # DPO, last step
    reward_accuracy: float | None = None


class Comparison(BaseModel):
    """A paired comparison of two scored systems on the same segments (`compare/<baseline>-vs-<system>/`)."""

    baseline: str
    system: str
    folder: str
    directions: int
    chrf_wins: int  # directions where the system's chrF is higher
    chrf_significant_wins: int  # ... and the paired bootstrap says so (p < 0.05)
    chrf_significant_losses: int
    chrf: dict[str, dict[str, Any]]  # direction -> base/new/delta/p_value/significant/95% intervals
    off_target_only_baseline: int  # segments off-target in the baseline only, pooled over directions
    off_target_only_system: int
    off_target_p: float  # exact McNemar over the pooled discordant segments


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


class Lineage(BaseModel):
    """dataset manifest -> checkpoint -> deployment -> scores."""

    dataset: DatasetLink
    checkpoint: CheckpointLink
    deployment: DeploymentLink
    scores: dict[str, ScoresLink]
    trained: dict[str, CheckpointLink] = {}  # every trained system (the first is `checkpoint`)


class DemoSummary(BaseModel):
    """`summary.json` of a demo folder."""

    demo: str
    seconds: float
    stage_seconds: dict[str, float]
    train: TrainStats  # the served system's SFT run
    trained: dict[str, TrainStats] = {}  # every trained system, by the name it is scored under
    lineage: Lineage
    exchanges: list[Exchange]
    systems: dict[str, list[ScoreRow]]
    comparisons: dict[str, Comparison] = {}
    followups: dict[str, dict[str, float | None]] = {}  # system -> follow-up kind -> pass rate

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)



METRICS = (("chrf", "chrF", True), ("bleu", "BLEU", True), ("off_target", "off-target %", False),
           ("repetition", "repetition loops %", False))


def _metrics(summary: DemoSummary) -> list[tuple[str, str, bool]]:
    """The report's metrics that the systems were scored with, in METRICS order."""
    scored = {k for rows in summary.systems.values() for r in rows for k, v in r.scores.items() if v is not None}
    return [m for m in METRICS if m[0] in scored]


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
    metrics = _metrics(summary)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(7.0, 0.9 * len(directions) + 2), 2.6 * len(metrics) + 1),
                             sharex=True, squeeze=False)
    axes = [a[0] for a in axes]
    for ax, (metric, label, higher) in zip(axes, metrics):
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


def _steps(run_dir: str | None) -> list[dict[str, Any]]:
    metrics = Path(run_dir) / "metrics.jsonl" if run_dir else None
    if metrics is None or not metrics.exists():
        return []
    return [row for ln in metrics.read_text().splitlines() if ln.strip() and "loss" in (row := json.loads(ln))]


def _plot_training(summary: DemoSummary, path: Path) -> bool:
    """Loss curves of every trained system; DPO runs get a second panel with the reward margin and accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary.trained or {"tuned": summary.train}
    curves = {name: _steps(stats.run_dir or summary.lineage.checkpoint.run_dir) for name, stats in runs.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    dpo = {k: v for k, v in curves.items() if "reward_margin" in v[0]}
    fig, axes = plt.subplots(1, 2 if dpo else 1, figsize=(11 if dpo else 6, 3.4), squeeze=False)
    ax = axes[0][0]
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (SFT: response tokens; DPO: sigmoid loss)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if dpo:
        ax = axes[0][1]
        for name, rows in dpo.items():
            steps = [r["step"] for r in rows]
            ax.plot(steps, [r["reward_margin"] for r in rows], marker=".", label=f"{name} reward margin")
            ax.plot(steps, [r["reward_accuracy"] for r in rows], marker="x", ls="--", label=f"{name} reward accuracy")
        ax.set_xlabel("DPO step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
    has_loss = _plot_training(summary, out / "loss.png")
    systems = summary.systems
    names = list(systems)
    directions = [r.direction for r in systems[names[0]]]
    lines = [f"# xalign demo: {summary.demo}", "",
             f"This invocation took {summary.seconds:.0f} s (a stage reused from an earlier run costs nothing). "
             "Stage seconds when each ran: "
             + ", ".join(f"{k} {v:.0f}" for k, v in summary.stage_seconds.items()) + ".", ""]
    metrics = _metrics(summary)
    lines += [f"## Scores ({' / '.join(label for _, label, _ in metrics)})", "",
              "| direction | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for d in directions:
        cells = [" / ".join(f"{_score(systems[n], d, m):.1f}" for m, _, _ in metrics) for n in names]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(" / ".join(f"{_mean(systems[n], m):.1f}" for m, _, _ in metrics)
                                            for n in names) + " |")
    lines += ["", "![scores](scores.png)", ""]
    if summary.comparisons:
        lines += ["## Paired comparisons", "",
                  "chrF: directions where the system is higher (significantly higher / significantly lower by paired "
                  "bootstrap, p < 0.05). Off-target: segments off-target in one system only, pooled over directions, "
                  "exact McNemar test.", "",
                  "| system | vs | chrF higher | sig. higher | sig. lower | off-target only in vs / in system | p |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for c in summary.comparisons.values():
            lines.append(f"| {c.system} | {c.baseline} | {c.chrf_wins}/{c.directions} | {c.chrf_significant_wins} | "
                         f"{c.chrf_significant_losses} | {c.off_target_only_baseline} / {c.off_target_only_system} | "
                         f"{c.off_target_p:.3g} |")
        lines.append("")
    if summary.followups:
        kinds = sorted({k for rates in summary.followups.values() for k in rates})
        lines += ["## Follow-ups (`xalign evaluate followups`, Flores-200 dev)", "",
                  "Share of conversations whose second answer changed the asked way: retarget = in the new language "
                  "(language ID); shorter = shorter than the model's own first answer and still in its language.", "",
                  "| system | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for name, rates in summary.followups.items():
            cells = ["–" if rates.get(k) is None else f"{100 * rates[k]:.0f}%" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if has_loss:
        lines += ["## Training", "", "| system | steps | loss first → last | DPO reward margin / accuracy (last) |",
                  "|---|---:|---|---|"]
        for name, st in (summary.trained or {"tuned": summary.train}).items():
            reward = (f"{st.reward_margin:.3f} / {st.reward_accuracy:.2f}" if st.reward_margin is not None
                      and st.reward_accuracy is not None else "–")
            loss = (f"{st.first_loss:.3f} → {st.last_loss:.3f}" if st.first_loss is not None
                    and st.last_loss is not None else "–")
            lines.append(f"| {name} | {st.steps} | {loss} | {reward} |")
        lines += ["", "![training](loss.png)", ""]
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
