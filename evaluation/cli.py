"""`xalign evaluate`: batch benchmark scoring, and `xalign evaluate compare RUN_A RUN_B`.

    xalign evaluate --suite flores200-quick --model default
    xalign evaluate --suite wmt22-systems --hyp-dir ../shared/data/wmt22
    xalign evaluate --suite flores200-quick --endpoint http://127.0.0.1:8000 generation.max_tokens=128
    xalign evaluate --suite flores200-demo --model default --prompt few_shot
    xalign evaluate --suite flores200-quick --model default --resume RUN_ID
    xalign evaluate compare RUN_A RUN_B
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cluster.cli import add_address_arg
from cluster.config import RecipeError, find_recipe, load_recipe, validate

console = Console(highlight=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a model on a benchmark suite (Flores-200, WMT22, NTREX-128, TSV/JSONL)",
        description="Generate with Ray Data + vLLM (or an endpoint, or read --hyp-dir), score with BLEU/chrF/"
                    "chrF++/TER/COMET/off-target, write JSON, Markdown and HTML reports. "
                    "`xalign evaluate compare RUN_A RUN_B` compares two runs with paired bootstrap.",
    )
    p.add_argument("--suite", "--recipe", dest="recipe", default=None,
                   help="suite recipe: recipes/eval-<NAME>.yaml (NAME or eval-NAME) or a YAML path")
    p.add_argument("--model", default=None, help="model folder or 'default' (with --hyp-dir: the system's name)")
    p.add_argument("--endpoint", default=None, help="generate against this running server instead of vLLM actors")
    p.add_argument("--api", choices=["chat", "translate"], default=None,
                   help="endpoint API: /v1/chat/completions (chat) or xalign's /v1/translate")
    p.add_argument("--hyp-dir", default=None, help="score hypothesis files instead of generating")
    p.add_argument("--prompt", choices=["chat", "few_shot"], default=None,
                   help="chat: the shared chat-template instruction (default); few_shot: plain few-shot prompt "
                        "(the reference point for a base model)")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="finish an interrupted run: keep its finished directions, generate the rest")
    p.add_argument("--comet-model", default=None, help="COMET checkpoint (adds the comet metric)")
    p.add_argument("--output", default=None, help="reports folder (default outputs/reports)")
    p.add_argument("--baseline", default=None, help="earlier run (id or folder) to report deltas against")
    p.add_argument("--samples", type=int, default=None, help="compare: paired bootstrap resamples (default 1000)")
    add_address_arg(p)
    p.add_argument("args", nargs="*", metavar="key.sub=value | compare RUN_A RUN_B", help="recipe overrides")
    p.set_defaults(func=run_cli)


def find_suite(name: str) -> Path:
    try:
        return find_recipe(name)
    except RecipeError:
        if Path(name).suffix or name.startswith("eval-"):
            raise
        return find_recipe(f"eval-{name}")


def build_recipe(args: argparse.Namespace):
    from evaluation.recipe import EvalRecipe

    if not args.recipe:
        raise RecipeError("--suite is required (e.g. --suite flores200-quick; suites: recipes/eval-*.yaml)")
    path = find_suite(args.recipe)
    recipe = load_recipe(EvalRecipe, path, args.args)
    data = recipe.model_dump()
    if args.model and not args.hyp_dir:
        data["engine"]["model"] = args.model
    if args.endpoint:
        data["endpoint"]["url"] = args.endpoint
    if args.api:
        data["endpoint"]["api"] = args.api
    if args.comet_model:
        data["metrics"]["comet_model"] = args.comet_model
        if "comet" not in data["metrics"]["names"]:
            data["metrics"]["names"].append("comet")
    if args.output:
        data["output_dir"] = args.output
    if args.prompt:
        data["generation"]["prompt"] = args.prompt
    if args.resume:
        data["run_id"], data["resume"] = args.resume, True
    if args.samples:
        data["bootstrap_samples"] = args.samples
    return validate(EvalRecipe, data, f"{path} (with command-line options)")


def _summary(doc: dict) -> Table:
    from evaluation.reports.tables import LABELS, direction_table, fmt

    metrics = doc["run"]["metrics"]
    table = Table(title=f"{doc['run']['suite']} — {doc['run']['run_id']}")
    if len(doc["systems"]) > 3:  # a leaderboard per direction reads better than per-system averages
        head, body = direction_table(doc)
        for col in head:
            table.add_column(col)
        for row in body:
            table.add_row(*row)
        return table
    for col in ["system", "average over", "directions", *[LABELS.get(m, m) for m in metrics]]:
        table.add_column(col)
    for a in doc["aggregates"]:
        table.add_row(a["system"], a["name"], str(a["directions"]), *[fmt(m, a["scores"].get(m)) for m in metrics])
    return table


def _errors() -> tuple[type[Exception], ...]:
    from cluster.locations import DataNotFoundError
    from cluster.models import ModelResolutionError
    from evaluation.compare import CompareError
    from evaluation.directions import DirectionError
    from evaluation.generation.endpoint import EndpointError
    from evaluation.lineage import LineageError
    from evaluation.loaders import LoaderError
    from evaluation.metrics.comet import CometError
    from evaluation.outputs import RunNotFoundError
    from evaluation.progress import ResumeError

    return (LoaderError, DirectionError, EndpointError, CometError, LineageError, CompareError, RunNotFoundError,
            ModelResolutionError, DataNotFoundError, ResumeError)


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.args and args.args[0] == "compare":
            return _compare(args)
        return _evaluate(args)
    except _errors() as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 1


def _evaluate(args: argparse.Namespace) -> int:
    from evaluation.outputs import read_scores
    from evaluation.runner import evaluate

    recipe = build_recipe(args)
    run = evaluate(recipe, hyp_dir=args.hyp_dir, system=args.model if args.hyp_dir else None,
                   address=args.address, baseline=args.baseline)
    console.print(_summary(read_scores(run)))
    console.print(f"reports: {run.root / 'report.md'}  {run.root / 'report.html'}  {run.scores}", soft_wrap=True)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from evaluation.compare import compare
    from evaluation.reports.tables import LABELS, fmt

    rest = args.args[1:]
    if len(rest) != 2:
        raise RecipeError("usage: xalign evaluate compare RUN_A RUN_B [--output DIR] [--samples N]")
    folder, result = compare(rest[0], rest[1], args.output or "outputs/reports", args.samples or 1000)
    table = Table(title=f"{result['new']['system']} vs {result['base']['system']} (Δ = new − base, * p<0.05)")
    table.add_column("direction")
    for m in result["metrics"]:
        table.add_column(f"{LABELS.get(m, m)} base → new (Δ)")
    for key, per in result["directions"].items():
        cells = []
        for m in result["metrics"]:
            s = per[m]
            star = "*" if s.get("significant") else ""
            delta = "–" if s["delta"] is None else f"{s['delta']:+.2f}{star}"
            cells.append(f"{fmt(m, s['base'])} → {fmt(m, s['new'])} ({delta})")
        table.add_row(key, *cells)
    console.print(table)
    for key, why in result["skipped"].items():
        console.print(f"[yellow]not compared[/yellow] {key}: {why}", soft_wrap=True)
    console.print(f"reports: {folder / 'compare.md'}  {folder / 'compare.html'}  {folder / 'compare.json'}",
                  soft_wrap=True)
    return 0
