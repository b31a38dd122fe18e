"""The dataset folder: written under a staging name, then renamed to `<name>-<dataset_id[:12]>` once the
manifest (and so the id) is known. A failed run leaves no half-written dataset behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from cluster import manifest
from cluster.config import save_resolved
from pipelines.data import stats
from pipelines.data.context import RunContext
from pipelines.data.recipe import PrepareRecipe


def output_root(recipe: PrepareRecipe) -> Path:
    root = Path(recipe.output_dir).expanduser()
    return root if root.is_absolute() else Path.cwd() / root


def staging_dir(recipe: PrepareRecipe) -> Path:
    root = output_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".staging-{recipe.name}-", dir=root))


def renumber(staging: Path, written: list[dict], kind: str) -> list[dict]:
    """Contiguous part numbers (a hash-assigned shard can come out empty); bytes are unchanged."""
    entries = []
    for k, st in enumerate(sorted(written, key=lambda s: s["shard"])):
        name = f"{kind}/part-{k:05d}.parquet"
        if name != st["file"]:  # k <= shard, and lower names were already moved: never clobbers
            (staging / st["file"]).rename(staging / name)
        entry = {"file": name, "sha256": st["sha256"], "rows": st["rows"], "samples": st["samples"],
                 "tokens": st["real_tokens"]}
        entries.append(entry)
    return entries


def assemble(ctx: RunContext) -> dict:
    """The manifest's body (its hash is the dataset id), after giving the shard files contiguous numbers."""
    recipe, plan = ctx.recipe, ctx.plan
    sft_entries = renumber(ctx.staging, ctx.sft_files, "sft")
    dpo_entries = renumber(ctx.staging, ctx.dpo_files, "dpo")
    summary = stats.summarize_counts(ctx.counts)
    sft_tokens = stats.merge_shards(ctx.sft_files, recipe.max_seq_len)
    summary["selected_by_builder_language"] = plan.targets if plan else {}
    summary["sft_samples"] = sft_tokens.get("samples", 0)
    summary["dpo_pairs"] = sum(e["rows"] for e in dpo_entries)
    shards = {"sft": sft_entries, "dpo": dpo_entries}
    tokens = {"sft": sft_tokens, "dpo": stats.merge_pairs(ctx.dpo_files)}
    if any(b.type == "rl" for b in recipe.builders.values()):
        # Only where the recipe asks for RL prompts, so the manifests (and ids) of other recipes stay as they were.
        shards["rl"] = renumber(ctx.staging, ctx.rl_files, "rl")
        summary["rl_prompts"] = sum(e["rows"] for e in shards["rl"])
        tokens["rl"] = stats.merge_rl(ctx.rl_files)
    return {
        "format": manifest.FORMAT,
        "name": recipe.name,
        "recipe": recipe.identity(),
        "tokenizer": {"model": recipe.model, **ctx.inputs.tokenizer},
        "software": manifest.software(),
        "inputs": [{"file": f.display, "sha256": f.sha256, "lines": f.lines} for f in ctx.inputs.files],
        "counts": summary,
        "mixing": plan.as_dict() if plan else None,
        "shards": shards,
        "rejects": sorted(({"reason": r["reason"], "file": r["file"], "sha256": r["sha256"], "rows": r["rows"]}
                           for r in ctx.reject_files), key=lambda r: r["reason"]),
        "tokens": tokens,
    }


def finalize(ctx: RunContext, body: dict, run_info: dict) -> Path:
    """Write the manifest, the resolved recipe and run.json, then move the folder to its id's name."""
    recipe, staging = ctx.recipe, ctx.staging
    m = manifest.with_id(body)
    for part in ("sft", "dpo", "rl", "rejects"):  # always present, so readers can glob a part that came out empty
        (staging / part).mkdir(exist_ok=True)
    manifest.write(m, staging)
    save_resolved(recipe, staging)
    (staging / "run.json").write_text(json.dumps(run_info, indent=2, sort_keys=True) + "\n")
    final = staging.parent / f"{recipe.name}-{m['dataset_id'][:12]}"
    if final.exists():  # the same dataset built again: replace it whole
        shutil.rmtree(final)
    staging.rename(final)
    return final
