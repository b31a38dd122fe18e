"""Ray Data pipeline vs single-process preprocessing of the same recipe, in one run, as ratios.

Both engines run the same transforms (`pipelines.data.stages`) on the same recipe, each in a fresh
subprocess so that peak RSS is the driver's own (Ray workers are separate processes); both must produce
the same dataset id, which the script checks. `--scale K` makes K copies of every input file (Alpaca ids and
NTREX lines repeated, in a temporary data root) and multiplies every source's `limit` by K, to see how
throughput and driver memory grow with the input; copies are exact duplicates, so the scaled runs switch dedup
off (every record still goes through language ID, length checks and tokenization).

    .venv/bin/python benchmarks/data_pipeline.py                                  # bayling2-mini, 1x
    .venv/bin/python benchmarks/data_pipeline.py --scale 1 4 16 --ceiling -- max_seq_len=256 mixing.total=2000  # 220k

`--ceiling` also runs two single-process copies at once: twice the work in the time two cores give two
processes that share nothing but the machine, the best any 2-way parallel implementation could do here.

Results go to stdout (a Markdown table for docs/BENCHMARKS.md) and outputs/benchmarks/data_pipeline.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
from cluster.config import load_recipe
from pipelines.data.recipe import PrepareRecipe
engine, recipe, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = load_recipe(PrepareRecipe, recipe, overrides)
t0 = time.time()
if engine == "ray":
    from pipelines.data.prepare import run_prepare
    out = run_prepare(r)
else:
    from pipelines.data.reference import run_reference
    out = run_reference(r)
wall = time.time() - t0
run = json.loads((out / "run.json").read_text())
print("RESULT " + json.dumps({"folder": str(out), "wall_s": wall, "run": run,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scaled_data_root(src: Path, dst: Path, k: int) -> None:
    """Every instruction file and NTREX-128 file repeated k times (Alpaca ids made unique per copy)."""
    (dst / "instructions").mkdir(parents=True)
    for f in (src / "instructions").glob("alpaca_*.json"):
        items = json.loads(f.read_text(encoding="utf-8"))
        out = [{**x, "id": f"{c}-{x.get('id', i)}"} for c in range(k) for i, x in enumerate(items)]
        (dst / "instructions" / f.name).write_text(json.dumps(out, ensure_ascii=False, indent=0), encoding="utf-8")
    (dst / "ntrex128").mkdir()
    for f in (src / "ntrex128").glob("*.txt"):
        (dst / "ntrex128" / f.name).write_text(f.read_text(encoding="utf-8") * k, encoding="utf-8")


def scaled_limits(recipe, k: int) -> list[str]:
    """Sources capped by `limit` read k times as many positions, so every builder's output grows k-fold."""
    return [f"sources.{name}.limit={src.limit * k}" for name, src in recipe.sources.items()
            if getattr(src, "limit", None)]


def _start(engine: str, recipe: str, overrides: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, engine, recipe, json.dumps(overrides)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(engine: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{engine} run failed (exit {proc.returncode}):\n{stderr[-4000:]}")


def run_engine(engine: str, recipe: str, overrides: list[str], env: dict) -> dict:
    return _result(engine, _start(engine, recipe, overrides, env))


def run_pair(recipe: str, overrides: list[str], env: dict, out_dirs: list[Path]) -> list[dict]:
    """Two single-process runs at once, each the whole input: what two cores give two independent processes
    (shared caches and memory bandwidth) with no coordination at all, the ceiling of any 2-way parallelization."""
    procs = [_start("single-process", recipe, [*overrides, f"output_dir={d}"], env) for d in out_dirs]
    return [_result("single-process", p) for p in procs]


def plot(results: list[dict], path: Path) -> None:
    """Throughput and driver peak RSS per input scale, both engines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [r["scale"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for engine, label in (("single-process", "single process"), ("ray", "Ray Data (2 CPUs)")):
        a.plot(scales, [r[engine]["run"]["records_built"] / r[engine]["wall_s"] for r in results], "o-", label=label)
        b.plot(scales, [r[engine]["peak_rss_mb"] for r in results], "o-", label=label)
    if all("ceiling" in r for r in results):
        a.plot(scales, [r["ceiling"] * r["single-process"]["run"]["records_built"] / r["single-process"]["wall_s"]
                        for r in results], "k--", label="2-process ceiling")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks(scales, [f"{k}x" for k in scales])
        ax.set_xlabel("input (copies of every source)")
        ax.legend()
    a.set(ylabel="records/s", title="Throughput")
    b.set(ylabel="MB", title="Driver peak RSS")
    b.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="bayling2-mini")
    ap.add_argument("--scale", type=int, nargs="+", default=[1], help="input copies per run (1 = the shared data)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also run two single-process copies at once per scale: the 2-process ceiling")
    ap.add_argument("overrides", nargs="*", help="recipe key=value overrides for both engines")
    args = ap.parse_args()

    from cluster.config import load_recipe
    from cluster.locations import data_root
    from pipelines.data.recipe import PrepareRecipe

    recipe = load_recipe(PrepareRecipe, args.recipe, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="xalign-bench-data-"))
    results = []
    try:
        for k in args.scale:
            env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
            overrides = [*args.overrides, f"output_dir={work / f'out-{k}'}", "ray.progress=false"]
            if k > 1:
                root = work / f"data-{k}"
                scaled_data_root(data_root(), root, k)
                env["XALIGN_DATA"] = str(root)
                overrides += ["filters.dedup.exact=false", "filters.dedup.near=false", *scaled_limits(recipe, k)]
            row = {"scale": k}
            for engine in ("single-process", "ray"):  # alternating engines per scale, one run each
                t = time.time()
                r = run_engine(engine, args.recipe, overrides, env)
                print(f"scale {k} {engine}: {r['run']['records_built']} records in {r['wall_s']:.1f}s "
                      f"({time.time() - t:.1f}s with interpreter start), driver peak RSS {r['peak_rss_mb']:.0f} MB",
                      flush=True)
                row[engine] = r
            a, b = row["single-process"], row["ray"]
            row["same_dataset"] = Path(a["folder"]).name == Path(b["folder"]).name
            row["speedup"] = a["wall_s"] / b["wall_s"]
            if args.ceiling:
                pair = run_pair(args.recipe, overrides, env, [work / f"out-{k}-pair{i}" for i in range(2)])
                row["pair_wall_s"] = [p["wall_s"] for p in pair]
                row["ceiling"] = 2 * a["wall_s"] / max(row["pair_wall_s"])
                print(f"scale {k} two single-process runs at once: {row['pair_wall_s'][0]:.1f}s and "
                      f"{row['pair_wall_s'][1]:.1f}s, ceiling {row['ceiling']:.2f}x", flush=True)
            results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nrecipe {args.recipe} {' '.join(args.overrides)}; {os.cpu_count()} CPUs\n")
    print("| input | records built | single-process s | Ray Data s | speedup (Ray / single) | 2-process ceiling | "
          "driver peak RSS single / Ray (MB) | same dataset id |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        a, b = row["single-process"], row["ray"]
        ceiling = f"{row['ceiling']:.2f}x" if "ceiling" in row else "not run"
        print(f"| {row['scale']}x | {b['run']['records_built']} | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
              f"{row['speedup']:.2f}x | {ceiling} | {a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} | "
              f"{row['same_dataset']} |")
    for row in results:
        print(f"\nRay stage seconds at {row['scale']}x: {row['ray']['run'].get('stage_s')}")
    out = REPO / "outputs" / "benchmarks" / "data_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"\nwritten {out.relative_to(REPO)} and {out.with_suffix('.png').relative_to(REPO)}")


if __name__ == "__main__":
    main()
