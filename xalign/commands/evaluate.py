"""`xalign evaluate`: batch benchmark scoring, and `xalign evaluate compare RUN_A RUN_B`.

    xalign evaluate --suite flores200-quick --model default
    xalign evaluate --suite wmt22-systems --hyp-dir ../shared/data/wmt22
    xalign evaluate --suite flores200-quick --endpoint http://127.0.0.1:8000 generation.max_tokens=128
    xalign evaluate --suite flores200-demo --model default generation.prompt=few_shot
    xalign evaluate --suite flores200-quick --model default --resume RUN_ID
    xalign evaluate compare RUN_A RUN_B
    xalign evaluate followups --model runs/<id>/export --limit 20 --languages de,sw

`xalign evaluate --suite ...` is `xalign evaluate run --suite ...` (the default sub-command). Recipe keys are set as
`key=value` overrides; the flags that name a key (`--model` is `engine.model=...`) are spellings of exactly that
override, and giving a key both ways is an error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cluster.config import RecipeError, apply_overrides, find_recipe, load_recipe, parse_override, validate
from xalign.commands.args import (
    Parser,
    add_address_arg,
    add_verbose_arg,
    key_flag,
    library_log,
    log_folder,
    override_key,
    overrides,
)

console = Console(highlight=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    p: Parser = subparsers.add_parser(
        "evaluate", help="score a model on a benchmark suite (Flores-200, WMT22, NTREX-128, TSV/JSONL)",
        description="Generate with Ray Data + vLLM (or an endpoint, or read --hyp-dir), score with BLEU/chrF/"
                    "chrF++/TER/COMET/off-target, write JSON, Markdown and HTML reports. "
                    "`xalign evaluate compare RUN_A RUN_B` compares two runs with paired bootstrap; "
                    "`xalign evaluate followups` checks that follow-ups (another language, shorter) are acted on.",
    )
    p.default_command = "run"
    actions = p.add_subparsers(dest="action", metavar="{run,compare,followups}")

    r = actions.add_parser("run", help="score one system on a suite (the default: `xalign evaluate --suite ...`)")
    r.add_argument("--suite", "--recipe", dest="recipe", default=None,
                   help="suite recipe: recipes/eval-<NAME>.yaml (NAME or eval-NAME) or a YAML path")
    key_flag(r, "--model", "engine.model", "model folder or 'default'; with --hyp-dir, the model (or system name) "
             "that wrote the files")
    key_flag(r, "--endpoint", "endpoint.url", "generate against this running server instead of vLLM actors")
    key_flag(r, "--api", "endpoint.api", "endpoint API: chat (/v1/chat/completions) or translate (/v1/translate)",
             choices=["chat", "translate"])
    key_flag(r, "--prompt", "generation.prompt", "chat: the shared chat-template instruction; few_shot: a plain "
             "few-shot prompt (the reference point for a base model)", choices=["chat", "few_shot"])
    key_flag(r, "--comet-model", "metrics.comet_model", "COMET checkpoint (scores the comet metric)")
    key_flag(r, "--resume", "run_id", "finish an interrupted run: keep its finished directions, generate the rest",
             also={"resume": True}, metavar="RUN_ID")
    key_flag(r, "--output", "output_dir", "reports folder or object-storage URI such as s3://bucket/reports "
             "(default outputs/reports)")
    key_flag(r, "--samples", "bootstrap_samples", "paired bootstrap resamples for --baseline deltas", type=int)
    r.add_argument("--hyp-dir", default=None, help="score hypothesis files instead of generating")
    r.add_argument("--baseline", default=None, help="earlier run (id or folder) to report deltas against")
    add_address_arg(r)
    add_verbose_arg(r)
    r.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides")
    r.set_defaults(func=run_cli)

    c = actions.add_parser("compare", help="compare two runs: per-direction deltas with paired bootstrap")
    c.add_argument("run_a", metavar="RUN_A", help="the base run (id or folder)")
    c.add_argument("run_b", metavar="RUN_B", help="the new run (id or folder)")
    c.add_argument("--output", default="outputs/reports",
                   help="where runs are found and the comparison is written (a folder or an s3://... URI)")
    c.add_argument("--samples", type=int, default=1000, help="paired bootstrap resamples")
    c.set_defaults(func=compare_cli)

    f = actions.add_parser("followups", help="does the model act on follow-ups? retarget and shorter on Flores dev",
                           description="Two-turn conversations from Flores-200 dev_subset510: the model's own "
                                       "translation, then 'Now translate it into Y.' (passes when the answer is in "
                                       "Y) or, for two-sentence passages, 'Make the X translation shorter.' (passes "
                                       "when shorter than its first answer and still in X). Writes followups.json.")
    key_flag(f, "--model", "engine.model", "model folder or 'default'")
    key_flag(f, "--limit", "limit", "conversations per kind and language", type=int)
    key_flag(f, "--languages", "languages", "first-turn targets, comma-separated (any spelling: de,sw,zh)")
    key_flag(f, "--output", "output_dir", "reports folder or object-storage URI (default outputs/reports)")
    add_address_arg(f)
    add_verbose_arg(f)
    f.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="settings overrides (e.g. kinds=[shorter] generation.max_tokens=128 generation.num_gpus=1)")
    f.set_defaults(func=followups_cli)


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
    return load_recipe(EvalRecipe, find_suite(args.recipe), overrides(args))


def hyp_system(args: argparse.Namespace) -> str | None:
    """With --hyp-dir: the system the files are from, as given by `engine.model` (or --model); None: the folder's
    name."""
    given = [parse_override(o)[1] for o in overrides(args) if override_key(o) == "engine.model"]
    return str(given[-1]) if given else None


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
    from cluster.storage import StorageError
    from evaluation.compare import CompareError
    from evaluation.directions import DirectionError
    from evaluation.followups import FollowupError
    from evaluation.generation.endpoint import EndpointError
    from evaluation.lineage import LineageError
    from evaluation.loaders import LoaderError
    from evaluation.metrics.comet import CometError
    from evaluation.outputs import RunNotFoundError
    from evaluation.progress import ResumeError

    return (LoaderError, DirectionError, EndpointError, CometError, LineageError, CompareError, RunNotFoundError,
            ModelResolutionError, DataNotFoundError, ResumeError, FollowupError, StorageError)


def _reporting_errors(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Evaluation's expected failures (bad data, unreachable endpoint, ...) as one error line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except _errors() as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            return 1

    return run


def run_cli(args: argparse.Namespace) -> int:
    return _reporting_errors(_evaluate)(args)


def compare_cli(args: argparse.Namespace) -> int:
    return _reporting_errors(_compare)(args)


def followups_cli(args: argparse.Namespace) -> int:
    return _reporting_errors(_followups)(args)


def followups_settings(args: argparse.Namespace):
    from evaluation.followups import FollowupSettings

    return validate(FollowupSettings, apply_overrides({}, overrides(args)), "xalign evaluate followups")


def _followups(args: argparse.Namespace) -> int:
    from evaluation.followups import run_followups
    from evaluation.outputs import location_file

    settings = followups_settings(args)
    with library_log(args, log_folder(settings.output_dir), "followups"):
        path, report = run_followups(settings, address=args.address)
    table = Table(title=f"follow-ups — {report['run']['model']['name']} ({report['run']['run_id']})")
    for col in ("follow-up", "answer in", "n", "pass rate", "first turn on target"):
        table.add_column(col)

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.0f}%"

    for kind, res in report["kinds"].items():
        for lang, per in res["by_language"].items():
            table.add_row(kind, lang, str(per["n"]), pct(per["pass_rate"]), pct(per["first_turn_on_target"]))
        table.add_row(f"[bold]{kind}[/bold]", "all", str(res["n"]), f"[bold]{pct(res['pass_rate'])}[/bold]",
                      pct(res["first_turn_on_target"]), end_section=True)
    console.print(table)
    for kind, res in report["kinds"].items():
        if res["failures"]:
            console.print(f"{kind} failures: " + ", ".join(f"{k} {v}" for k, v in res["failures"].items()))
    folder = path.parent if isinstance(path, Path) else path.rsplit("/", 1)[0]
    console.print(f"report: {path}  {location_file(folder, 'conversations.jsonl')}", soft_wrap=True)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from evaluation.outputs import read_scores
    from evaluation.runner import evaluate

    recipe = build_recipe(args)
    with library_log(args, log_folder(recipe.output_dir), "evaluate"):
        run = evaluate(recipe, hyp_dir=args.hyp_dir, system=hyp_system(args) if args.hyp_dir else None,
                       address=args.address, baseline=args.baseline)
    console.print(_summary(read_scores(run)))
    console.print(f"reports: {run.file('report.md')}  {run.file('report.html')}  {run.file('scores.json')}",
                  soft_wrap=True)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from evaluation.compare import compare
    from evaluation.outputs import location_file
    from evaluation.reports.tables import LABELS, fmt

    folder, result = compare(args.run_a, args.run_b, args.output, args.samples)
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
    files = (location_file(folder, f"compare.{ext}") for ext in ("md", "html", "json"))
    console.print("reports: " + "  ".join(map(str, files)), soft_wrap=True)
    return 0
