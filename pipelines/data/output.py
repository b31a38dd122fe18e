"""The dataset folder: written under a staging name, then renamed to `<name>-<dataset_id[:12]>` once the
manifest (and so the id) is known. A failed run leaves no half-written dataset behind.

`output_dir` may be a storage URI (`s3://…`): the writer tasks then put their shards straight into object
storage from whichever node runs them (nodes share no disk), and the driver finishes the folder there, writing
`checksums.json` last so readers know it is complete.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path

from cluster import manifest, storage
from cluster.config import save_resolved
from pipelines.data import stats
from pipelines.data.context import RunContext
from pipelines.data.recipe import PrepareRecipe


def output_root(recipe: PrepareRecipe) -> Path:
    root = Path(recipe.output_dir).expanduser()
    return root if root.is_absolute() else Path.cwd() / root


def staging_dir(recipe: PrepareRecipe) -> Path | str:
    if storage.is_uri(recipe.output_dir):  # object storage has no folders to create
        return storage.join(recipe.output_dir, f".staging-{recipe.name}-{secrets.token_hex(4)}")
    root = output_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".staging-{recipe.name}-", dir=root))


def remove(staging: Path | str) -> None:
    if isinstance(staging, str):
        fs, path = storage.filesystem(staging)
        try:
            fs.delete_dir(path)  # delete_dir_contents would leave the prefix behind as an empty "folder" object
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(staging, ignore_errors=True)


def _move(staging: Path | str, src: str, dst: str) -> None:
    if isinstance(staging, str):
        fs, _ = storage.filesystem(staging)
        fs.move(storage.filesystem(storage.join(staging, src))[1], storage.filesystem(storage.join(staging, dst))[1])
    else:
        (staging / src).rename(staging / dst)


def renumber(staging: Path | str, written: list[dict], kind: str) -> list[dict]:
    """Contiguous part numbers (a hash-assigned shard can come out empty); bytes are unchanged."""
    entries = []
    for k, st in enumerate(sorted(written, key=lambda s: s["shard"])):
        name = f"{kind}/part-{k:05d}.parquet"
        if name != st["file"]:  # k <= shard, and lower names were already moved: never clobbers
            _move(staging, st["file"], name)
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


def _write_metadata(ctx: RunContext, m: dict, run_info: dict, folder: Path) -> None:
    manifest.write(m, folder)
    save_resolved(ctx.recipe, folder)
    (folder / "run.json").write_text(json.dumps(run_info, indent=2, sort_keys=True) + "\n")


def _finalize_remote(ctx: RunContext, m: dict, run_info: dict, staging: str) -> str:
    """The staged shards are copied to `<name>-<id>/` inside the store, the metadata uploaded beside them, and
    `checksums.json` (from the manifest's shard hashes and the metadata's) written last."""
    final = storage.join(ctx.recipe.output_dir, f"{ctx.recipe.name}-{m['dataset_id'][:12]}")
    fs, final_path = storage.filesystem(final)
    fs.delete_dir_contents(final_path, missing_dir_ok=True)  # the same dataset built again: replace it whole
    listed = [e for split in ("sft", "dpo", "rl") for e in m["shards"].get(split, [])] + m["rejects"]
    sums = {e["file"]: e["sha256"] for e in listed}
    for name in sums:
        fs.copy_file(storage.filesystem(storage.join(staging, name))[1], f"{final_path}/{name}")
    with tempfile.TemporaryDirectory(prefix="xa-dataset-meta-") as tmp:
        _write_metadata(ctx, m, run_info, Path(tmp))
        sums.update(storage.local_checksums(Path(tmp)))
        for f in Path(tmp).iterdir():
            storage.write_bytes(storage.join(final, f.name), f.read_bytes())
    storage.write_text(storage.join(final, storage.CHECKSUMS), json.dumps(sums, indent=2, sort_keys=True) + "\n")
    remove(staging)
    return final


def finalize(ctx: RunContext, body: dict, run_info: dict) -> Path | str:
    """Write the manifest, the resolved recipe and run.json, then move the folder to its id's name."""
    recipe, staging = ctx.recipe, ctx.staging
    m = manifest.with_id(body)
    if isinstance(staging, str):
        return _finalize_remote(ctx, m, run_info, staging)
    for part in ("sft", "dpo", "rl", "rejects"):  # always present, so readers can glob a part that came out empty
        (staging / part).mkdir(exist_ok=True)
    _write_metadata(ctx, m, run_info, staging)
    final = staging.parent / f"{recipe.name}-{m['dataset_id'][:12]}"
    if final.exists():  # the same dataset built again: replace it whole
        shutil.rmtree(final)
    staging.rename(final)
    return final
