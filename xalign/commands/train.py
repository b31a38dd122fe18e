"""`xalign train`: fine-tune on Ray Train + DeepSpeed (SFT full/LoRA, DPO), embedded or on `--address`.

    xalign train --recipe train-sft-tiny-zero2 data.path=outputs/datasets/<name>-<id>
    xalign train --resume outputs/runs/<run_id>
    ray job submit --working-dir . -- xalign train --recipe ... run.output_dir=/shared/runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.config import RecipeError, load_recipe
from xalign.commands.args import add_address_arg, add_recipe_args, add_verbose_arg, console, library_log, overrides


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune with Ray Train + DeepSpeed: SFT (full or LoRA) or DPO")
    add_recipe_args(p)
    add_address_arg(p)
    p.add_argument("--resume", default=None, metavar="RUN_DIR|URI",
                   help="continue a stopped or failed run from its latest checkpoint (with its own recipe): its folder "
                        "or its mirror in object storage (status.json's run_uri)")
    p.add_argument("--stop-after-step", type=int, default=None, metavar="N",
                   help="stop after step N (checkpointed), to continue later with --resume")
    add_verbose_arg(p)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from cluster import storage
    from pipelines.train.metrics import read_metrics
    from pipelines.train.recipe import TrainRecipe
    from pipelines.train.run import RESOLVED, STATUS, localize_run, run_train
    from pipelines.train.shards import DatasetError

    recipe = None
    if args.resume and storage.is_uri(args.resume):  # a run mirrored in object storage: continue it here
        args.resume = str(localize_run(args.resume))
        console.print(f"run folder fetched to {args.resume}")
    if args.resume:
        if args.recipe or args.overrides:  # must equal the run's recipe; run_train names any difference
            source = args.recipe or Path(args.resume) / RESOLVED
            recipe = load_recipe(TrainRecipe, source, overrides(args))
        logs = Path(args.resume).expanduser().parent / "logs"
    elif args.recipe is None:
        raise RecipeError("--recipe is required (or --resume RUN_DIR)")
    else:
        recipe = load_recipe(TrainRecipe, args.recipe, overrides(args))
        logs = Path(recipe.run.output_dir).expanduser() / "logs"
    try:
        with library_log(args, logs, "train"):
            run_dir = run_train(recipe, address=args.address, resume=args.resume,
                                stop_after_step=args.stop_after_step)
    except DatasetError as exc:
        console.print(f"[red]dataset error:[/red] {exc}")
        return 2
    status = json.loads((run_dir / STATUS).read_text())
    rows = read_metrics(run_dir)
    last = rows[-1] if rows else {}
    console.print(f"run {status['run_id']}: {status['state']} at step {status.get('step')}/{status['total_steps']}"
                  + (f", loss {last['loss']:.4f}" if "loss" in last else ""))
    console.print(f"  run folder: {run_dir}")
    if (run_dir / "export").is_dir():
        console.print(f"  export:     {run_dir / 'export'}")
    if status.get("export_uri"):
        console.print(f"  published:  {status['export_uri']}  (serve or evaluate {status['export_uri']}/model)")
    if status.get("run_uri"):
        console.print(f"  mirrored:   {status['run_uri']}")
    if status["state"] == "stopped":
        console.print(f"  continue with: xalign train --resume {status.get('run_uri') or run_dir}")
    return 0 if status["state"] in ("completed", "stopped") else 1
