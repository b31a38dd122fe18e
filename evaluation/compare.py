"""`xalign evaluate compare RUN_A RUN_B`: side by side, with paired bootstrap significance per direction.

RUN_A is the baseline (e.g. the base model), RUN_B the candidate (e.g. the tuned export). A run with
several systems (WMT22 system outputs) is narrowed with `RUN:SYSTEM`. Only directions scored in both
runs on the same sources and references are compared; the others are listed, not silently dropped.
Runs and the output folder may be in object storage (`s3://...`): runs are read from verified local copies and the
comparison is staged on this node, then uploaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cluster import storage
from evaluation import significance
from evaluation.aggregate import aggregate
from evaluation.directions import Direction
from evaluation.outputs import (
    RunDir,
    find_run,
    local_folder,
    publish,
    read_generations,
    read_scores,
    safe_name,
    write_json,
)
from evaluation.recipe import MetricsSettings
from evaluation.reports import html, make_plots, markdown, save_plots, single_system, tables


class CompareError(ValueError):
    pass


# Metrics that are a % of segments flagged (lower is better), tested with paired per-segment verdicts.
RATE_METRICS = ("off_target", "repetition")


def _paired_rate(name: str, d: Direction, gen_a: list[dict[str, Any]], gen_b: list[dict[str, Any]],
                 refs: list[list[str]]) -> dict[str, Any]:
    from evaluation.metrics.base import MetricInput
    from evaluation.metrics.registry import get_metric

    metric, sources = get_metric(name), [g["source"] for g in gen_a]
    verdicts = [metric.score(MetricInput(d, sources, [g["hypothesis"] for g in gen], refs),
                             sentence_level=True).sentence_scores or [] for gen in (gen_a, gen_b)]
    return significance.paired_rate(*verdicts)


def _split(spec: str, output_dir: str) -> tuple[RunDir, str | None]:
    try:
        return find_run(spec, output_dir), None
    except FileNotFoundError:
        if ":" not in spec:
            raise
        run, system = spec.rsplit(":", 1)
        return find_run(run, output_dir), system


def _digest(rows: list[dict[str, Any]]) -> str:
    blob = json.dumps([[r["source"], r.get("references")] for r in rows], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def _settings(run: RunDir) -> MetricsSettings:
    """The metric settings the run was scored with (BLEU tokenizer choice and the like)."""
    import yaml

    from evaluation.recipe import EvalRecipe

    resolved = run.root / "recipe.resolved.yaml"
    if resolved.is_file():
        return EvalRecipe.model_validate(yaml.safe_load(resolved.read_text())).metrics
    return MetricsSettings()


def compare(spec_a: str, spec_b: str, output_dir: str = "outputs/reports", n_samples: int = 1000,
            out: str | Path | None = None) -> tuple[Path | str, dict[str, Any]]:
    """Compare run B against run A; returns (the comparison's folder, a URI when in storage, and the result)."""
    run_a, sys_a = _split(spec_a, output_dir)
    run_b, sys_b = _split(spec_b, output_dir)
    try:
        a = single_system(read_scores(run_a), sys_a)
        b = single_system(read_scores(run_b), sys_b)
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    name_a, name_b = next(iter(a["systems"])), next(iter(b["systems"]))
    settings = _settings(run_b)
    metrics = [m for m in b["run"]["metrics"] if m in a["run"]["metrics"]]
    tested = significance.supported(metrics)

    rows_a = {r["direction"]: r for r in a["rows"]}
    directions: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for row in b["rows"]:
        key = row["direction"]
        if key not in rows_a:
            skipped[key] = f"not scored in {run_a.run_id}"
            continue
        gen_a, gen_b = read_generations(run_a, name_a, key), read_generations(run_b, name_b, key)
        if _digest(gen_a) != _digest(gen_b):
            skipped[key] = "different sources or references (other test set, limit or reference choice)"
            continue
        refs = [list(x) for x in zip(*[g["references"] for g in gen_a])]
        d = Direction(row["src"], row["tgt"])
        directions[key] = significance.paired_bootstrap(
            d, [g["hypothesis"] for g in gen_a], [g["hypothesis"] for g in gen_b], refs, tested, n_samples, settings)
        for m in metrics:
            if m in RATE_METRICS:  # a share of flagged segments: McNemar's test on the paired verdicts
                directions[key][m] = _paired_rate(m, d, gen_a, gen_b, refs)
            elif m not in tested:  # no resampling for these: report the scores and the change only
                x, y = rows_a[key]["scores"].get(m), row["scores"].get(m)
                directions[key][m] = {"base": x, "new": y, "delta": None if x is None or y is None else y - x,
                                      "p_value": None, "significant": None}
    for key in rows_a:
        if key not in directions and key not in skipped:
            skipped[key] = f"not scored in {run_b.run_id}"
    if not directions:
        raise CompareError(f"{run_a.run_id} and {run_b.run_id} share no comparable direction: {skipped}")

    a_kept = {**a, "rows": [r for r in a["rows"] if r["direction"] in directions]}
    b_kept = {**b, "rows": [r for r in b["rows"] if r["direction"] in directions]}
    a_kept["aggregates"], b_kept["aggregates"] = aggregate(a_kept["rows"]), aggregate(b_kept["rows"])
    result = {
        "base": {"run_id": run_a.run_id, "system": name_a, "model": a["systems"][name_a]},
        "new": {"run_id": run_b.run_id, "system": name_b, "model": b["systems"][name_b]},
        "metrics": metrics, "tested": tested, "bootstrap_samples": n_samples, "alpha": significance.ALPHA,
        "directions": directions, "skipped": skipped,
        "aggregates": _aggregate_deltas(a_kept["aggregates"], b_kept["aggregates"], metrics),
    }
    name = f"compare-{safe_name(run_a.run_id)}-vs-{safe_name(run_b.run_id)}"
    location: Path | str
    if out:
        location = str(out) if storage.is_uri(out) else Path(out)
    else:
        location = storage.join(output_dir, name) if storage.is_uri(output_dir) else Path(output_dir) / name
    folder = local_folder(location)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "compare.json", result)
    _write_reports(folder, a_kept, b_kept, result)
    if isinstance(location, str):
        publish(folder, location)
    return location, result


def _aggregate_deltas(aggs_a: list[dict[str, Any]], aggs_b: list[dict[str, Any]],
                      metrics: list[str]) -> list[dict[str, Any]]:
    by_a = {(x["by"], x["name"]): x for x in aggs_a}
    out = []
    for y in aggs_b:
        x = by_a.get((y["by"], y["name"]))
        if x is None:
            continue
        scores = {}
        for m in metrics:
            va, vb = x["scores"].get(m), y["scores"].get(m)
            scores[m] = {"base": va, "new": vb, "delta": None if va is None or vb is None else vb - va}
        out.append({"by": y["by"], "name": y["name"], "directions": y["directions"], "scores": scores})
    return out


def _write_reports(folder: Path, a: dict[str, Any], b: dict[str, Any], result: dict[str, Any]) -> None:
    tested = [*result["tested"], *(m for m in RATE_METRICS if m in result["metrics"])]
    sig = {"metrics": tested, "directions": result["directions"]}
    delta = tables.delta_table(b, a, sig)
    title = f"{result['new']['system']} ({result['new']['run_id']}) vs {result['base']['system']} " \
            f"({result['base']['run_id']})"
    images = make_plots(b, a, result["base"]["system"])
    paths = save_plots(folder / "plots", images)
    agg_head = ["average over", "directions"]
    for m in result["metrics"]:
        agg_head += [f"{tables.LABELS.get(m, m)} base", f"{tables.LABELS.get(m, m)} new", "Δ"]
    agg_body = []
    for x in result["aggregates"]:
        cells = [x["name"], str(x["directions"])]
        for m in result["metrics"]:
            s = x["scores"][m]
            cells += [tables.fmt(m, s["base"]), tables.fmt(m, s["new"]),
                      "–" if s["delta"] is None else f"{s['delta']:+.2f}"]
        agg_body.append(cells)
    skipped = "\n".join(f"- {k}: {why}" for k, why in result["skipped"].items()) or "none"
    md = "\n\n".join([
        f"# {title}",
        f"Paired bootstrap resampling ({result['bootstrap_samples']} samples, sacrebleu `paired-bs`); "
        f"p < {result['alpha']} marks a significant difference. Δ = new − base.",
        "## Averages", markdown.md_table((agg_head, agg_body)),
        "## By direction", markdown.md_table(delta),
        "## Not compared", skipped,
        "## Plots", *[f"![{t}]({p})" for t, p in paths.items()],
    ]) + "\n"
    (folder / "compare.md").write_text(md, encoding="utf-8")
    page = html.render(b, images, delta, result["base"]["run_id"], title=title,
                       extra={"Models compared": tables.identity_table(
                           {"systems": {f"base: {result['base']['system']}": result["base"]["model"],
                                        f"new: {result['new']['system']}": result["new"]["model"]}}),
                           "Averages: base vs new": (agg_head, agg_body)})
    (folder / "compare.html").write_text(page, encoding="utf-8")
