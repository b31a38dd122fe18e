"""`xalign prepare --recipe NAME [key=value ...] [--address ADDR]`: build a dataset and print its summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cluster.config import RecipeError, load_recipe
from xalign.commands.args import add_address_arg, add_recipe_args, add_verbose_arg, library_log, log_folder, overrides

console = Console(highlight=False)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="build the cross-lingual instruction mixture with Ray Data (shards + manifest)",
        description="Read, build, filter, mix, tokenize, pack and shard a dataset as a recipe says.",
    )
    add_recipe_args(p)
    add_address_arg(p)
    add_verbose_arg(p)
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from cluster import manifest
    from pipelines.data.mixing import MixingError
    from pipelines.data.prepare import run_prepare
    from pipelines.data.readers import InputError
    from pipelines.data.recipe import PrepareRecipe

    if not args.recipe:
        raise RecipeError("xalign prepare needs --recipe NAME (e.g. bayling2-mini)")
    recipe = load_recipe(PrepareRecipe, args.recipe, overrides(args))
    console.print(f"[bold]xalign prepare[/bold] {recipe.name}: {recipe.description or ''}")
    try:
        with library_log(args, log_folder(recipe.output_dir), "prepare"):
            out = run_prepare(recipe, address=args.address,
                              log=lambda m: console.print(f"[cyan]prepare[/cyan] {m}"))
    except (InputError, MixingError) as exc:
        console.print(f"[red]input error:[/red] {exc}")
        return 2
    print_summary(manifest.load(out), out)
    return 0


def print_summary(m: dict, folder: Path | str) -> None:
    counts, tokens = m["counts"], m["tokens"]
    selected = counts["selected_by_builder_language"]
    t = Table(title=f"{m['name']}  dataset_id {m['dataset_id'][:12]}")
    for col in ("builder", "built", "rejected", "available", "in mixture", "languages"):
        t.add_column(col, justify="left" if col in ("builder", "languages") else "right")
    for b, built in counts["built_by_builder"].items():
        avail = counts["available_by_builder_language"].get(b, {})
        picked = selected.get(b)
        rejected = sum(counts["rejected_by_builder"].get(b, {}).values())
        if m["recipe"]["builders"][b]["type"] == "preference":
            in_mix = f"{tokens['dpo']['pairs']} (dpo/)"
        elif m["recipe"]["builders"][b]["type"] == "rl":
            in_mix = f"{sum(avail.values())} (rl/)"
        else:
            in_mix = str(sum(picked.values())) if picked else "0"
        langs = picked or avail
        t.add_row(b, str(built), str(rejected), str(sum(avail.values())), in_mix,
                  ", ".join(f"{k.split('_')[0]}:{v}" for k, v in sorted(langs.items(), key=lambda kv: -kv[1])[:8])
                  + (" …" if len(langs) > 8 else ""))
    console.print(t)

    r = Table(title="rejected records (rejects/)")
    r.add_column("reason")
    r.add_column("records", justify="right")
    for reason, n in counts["rejected_by_reason"].items():
        r.add_row(reason, str(n))
    if counts["rejected_by_reason"]:
        console.print(r)

    sft, dpo = tokens["sft"], tokens["dpo"]
    s = Table(title="output")
    s.add_column("part")
    s.add_column("value", justify="right")
    s.add_row("SFT samples / packed rows", f"{sft.get('samples', 0)} / {sft.get('rows', 0)}")
    if sft.get("rows"):
        s.add_row("real / trainable tokens", f"{sft['real_tokens']} / {sft['trainable_tokens']}")
        s.add_row(f"packing efficiency (max_seq_len {sft['max_seq_len']})", f"{sft['packing_efficiency']:.1%}")
    s.add_row("DPO pairs", f"{dpo['pairs']}  {dpo['pairs_by_reason']}" if dpo["pairs"] else "0")
    if "rl" in tokens:
        rl = tokens["rl"]
        s.add_row("RL prompts (max prompt tokens)", f"{rl['prompts']} ({rl['max_prompt_tokens']})  "
                  f"{len(rl['prompts_by_direction'])} directions")
    s.add_row("shards", f"sft {len(m['shards']['sft'])}, dpo {len(m['shards']['dpo'])}"
              + (f", rl {len(m['shards']['rl'])}" if "rl" in m["shards"] else ""))
    s.add_row("folder", str(folder))
    console.print(s)
