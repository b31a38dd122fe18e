"""What Ray Train + Ray Data cost on top of DeepSpeed: tokens/s of `xalign train` vs the same training loop
(`pipelines.train.loop`, same model, DeepSpeed config, batches and threads) launched bare with torchrun
reading the Parquet shards directly, alternating in one run, as a ratio. Also the dataset's packing
efficiency, the padding left in micro-batches, peak RSS per worker, and a short LoRA run of the
packaged Gemma 3 270M on the BayLing 2 miniature.

    .venv/bin/python benchmarks/train_overhead.py                   # ~15 min on 2 cores
    .venv/bin/python benchmarks/train_overhead.py --gemma-steps 0   # overhead only

Results go to stdout (a Markdown table for docs/BENCHMARKS.md) and outputs/benchmarks/train_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("XALIGN_NO_PROGRESS", "1")


def steady(rows: list[dict], skip: int) -> dict:
    """Throughput over the steps after `skip` warm-up steps: tokens / time spent in steps."""
    body = rows[skip:]
    tokens = sum(r["tokens"] for r in body)
    seconds = sum(r["step_time_s"] for r in body)
    return {"steps": len(body), "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": tokens / seconds, "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "final_loss": rows[-1]["loss"]}


def padding_efficiency(files: list[str], micro: int, world: int) -> float:
    """Real tokens / tokens computed, when each micro-batch is padded to its longest row."""
    import pyarrow.parquet as pq

    lengths = [n for f in files for n in pq.read_table(f, columns=["num_tokens"])["num_tokens"].to_pylist()]
    per = len(lengths) // world
    real = padded = 0
    for r in range(world):
        mine = lengths[r * per:(r + 1) * per]
        for i in range(0, len(mine) - micro + 1, micro):
            batch = mine[i:i + micro]
            real += sum(batch)
            padded += max(batch) * len(batch)
    return real / padded


# ---- the bare baseline: one process per rank under torchrun ---------------------------------------------


def bare_worker(job_file: str, out_file: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pipelines.train.checkpointing import TrainState
    from pipelines.train.loop import Plan, PolicyTrainer, metrics_row, train
    from pipelines.train.recipe import TrainRecipe
    from pipelines.train.shards import COLUMNS

    job = json.loads(Path(job_file).read_text())
    recipe = TrainRecipe.model_validate(job["recipe"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(recipe.scaling.torch_threads or 1)
    plan = Plan(**job["plan"])
    trainer = PolicyTrainer(recipe, Path(job["model_dir"]), plan, world)  # init_distributed: torchrun's env://
    table = pa.concat_tables(pq.read_table(f, columns=list(COLUMNS[recipe.split])) for f in job["files"])
    per = table.num_rows // world  # contiguous equal shares, like Ray Data's in-order split
    mine = table.slice(rank * per, per)

    def source(epoch: int):
        micro = recipe.batch.micro_batch_size
        for i in range(0, mine.num_rows, micro):
            chunk = mine.slice(i, micro)
            batch = {}
            for name in chunk.column_names:
                col = chunk[name].to_pylist()
                arr = np.empty(len(col), dtype=object)
                arr[:] = [np.asarray(x) if isinstance(x, list) else x for x in col]
                batch[name] = arr
            yield batch

    rows = []

    def after_step(state: TrainState, stats) -> bool:
        rows.append(metrics_row(trainer, state, stats, None))
        return False

    train(trainer, source, TrainState(), after_step)
    if rank == 0:
        Path(out_file).write_text(json.dumps(rows))


def run_bare(recipe, plan, model_dir: Path, files: list[str], work: Path, tag: str) -> list[dict]:
    from cluster.local_cluster import free_port

    job = work / f"bare-{tag}.json"
    out = work / f"bare-{tag}-metrics.json"
    job.write_text(json.dumps({"recipe": recipe.model_dump(mode="json"), "plan": plan.__dict__,
                               "model_dir": str(model_dir), "files": files}))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={recipe.scaling.num_workers}",
           f"--master_port={free_port()}", __file__, "--bare-worker", str(job), str(out)]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.read_text())


def run_ray(recipe, tag: str) -> tuple[list[dict], float]:
    from pipelines.train.metrics import read_metrics
    from pipelines.train.run import run_train

    t0 = time.perf_counter()
    run = run_train(recipe.model_copy(update={"run": recipe.run.model_copy(update={"name": f"ray-{tag}"})}))
    return read_metrics(run), time.perf_counter() - t0


def prepare(model: str, name: str, out: Path, overrides: list[str]) -> Path:
    from cluster.config import load_recipe
    from pipelines.data.prepare import run_prepare
    from pipelines.data.recipe import PrepareRecipe

    recipe = load_recipe(PrepareRecipe, name, [f"model={model}", f"output_dir={out}", "ray.progress=false",
                                               *overrides])
    return run_prepare(recipe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bare-worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the throughput")
    ap.add_argument("--rounds", type=int, default=2, help="bare/Ray alternations")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--gemma-steps", type=int, default=8)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    if args.bare_worker:
        bare_worker(*args.bare_worker)
        return

    from cluster.config import load_recipe
    from cluster.locations import cache_dir
    from cluster.ray_session import ray_session
    from cluster.tiny_model import build_tiny_model
    from pipelines.train.loop import Plan
    from pipelines.train.recipe import TrainRecipe
    from pipelines.train.shards import open_dataset

    # One JIT-build cache for the Ray workers and the torchrun ranks alike.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    work = Path(args.work or tempfile.mkdtemp(prefix="xalign-train-bench-"))
    model_dir = build_tiny_model(work / "model", hidden_size=args.hidden, num_layers=args.layers)
    results: dict = {"command": " ".join(["benchmarks/train_overhead.py", *sys.argv[1:]]),
                     "model": {"hidden": args.hidden, "layers": args.layers}}
    with ray_session(num_cpus=2):
        data = prepare(str(model_dir), "xllms100-mini", work / "datasets", [
            "max_seq_len=256", "mixing.total=1500", "sources.ntrex.limit=200", "filters.dedup.near=false"])
        info = open_dataset(data, "sft")
        recipe = load_recipe(TrainRecipe, "train-sft-tiny-zero2", [
            f"model.base={model_dir}", f"data.path={data}", f"run.output_dir={work / 'runs'}",
            f"training.max_steps={args.steps}", "batch.global_batch_size=16", "batch.micro_batch_size=4",
            f"checkpoint.every_steps={args.steps}", "export.enabled=false", "scaling.torch_threads=1"])
        plan = Plan.for_rows(recipe, info.num_rows)
        sft = info.manifest.get("tokens", {}).get("sft", {})
        results["data"] = {"rows": info.num_rows, "max_seq_len": 256,
                           "packing_efficiency": sft.get("packing_efficiency"),
                           "padding_efficiency": padding_efficiency(list(info.files), 4, 2)}
        rounds = []
        for i in range(args.rounds):
            bare = steady(run_bare(recipe, plan, model_dir, list(info.files), work, str(i)), args.skip)
            ray_rows, wall = run_ray(recipe, str(i))
            ray = {**steady(ray_rows, args.skip), "wall_s": round(wall, 1)}
            rounds.append({"bare": bare, "ray": ray, "ratio": ray["tokens_per_s"] / bare["tokens_per_s"],
                           "rss_ratio": ray["peak_rss_mb"] / bare["peak_rss_mb"]})
            print(f"round {i}: bare {bare['tokens_per_s']:.0f} tok/s, Ray {ray['tokens_per_s']:.0f} tok/s, "
                  f"ratio {rounds[-1]['ratio']:.3f}; peak RSS/worker bare {bare['peak_rss_mb']:.0f} MB, "
                  f"Ray {ray['peak_rss_mb']:.0f} MB", flush=True)
        results["overhead"] = rounds
        results["ratio"] = sum(r["ray"]["tokens_per_s"] for r in rounds) / sum(r["bare"]["tokens_per_s"]
                                                                              for r in rounds)
        results["rss_ratio"] = max(r["ray"]["peak_rss_mb"] for r in rounds) / max(r["bare"]["peak_rss_mb"]
                                                                                  for r in rounds)
        if args.gemma_steps:
            gdata = prepare("default", "bayling2-mini", work / "datasets", [
                "max_seq_len=256", "mixing.total=400", "sources.ntrex.limit=200", "filters.dedup.near=false"])
            g = load_recipe(TrainRecipe, "train-lora-gemma-mini", [
                f"data.path={gdata}", f"run.output_dir={work / 'runs'}", f"training.max_steps={args.gemma_steps}",
                f"checkpoint.every_steps={args.gemma_steps}", "export.enabled=false"])
            rows, wall = run_ray(g, "gemma")
            results["gemma_lora"] = {**steady(rows, 1), "wall_s": round(wall, 1), "first_loss": rows[0]["loss"],
                                     "s_per_step": sum(r["step_time_s"] for r in rows[1:]) / max(len(rows) - 1, 1)}
    out = REPO / "outputs" / "benchmarks" / "train_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"\nRay Train + Ray Data / bare torchrun: tokens/s {results['ratio']:.3f}, peak RSS per worker "
          f"{results['rss_ratio']:.3f}  (written to {out})")


if __name__ == "__main__":
    main()
