"""Training speed of the demo's Gemma 3 270M LoRA recipe in fp32 and bf16, against this host's own matmul peak.

One run measures, in this order: the host's fp32 and bf16 matmul peak at the workers' thread count (the
physical limit, `cluster.hardware.matmul_gflops`), then `xalign train --recipe train-lora-gemma-mini` with the
quick demo's batch (4 packed rows of <= 256 tokens per step) once per dtype, each told its dtype's measured peak
so `metrics.jsonl` carries MFU. Reported per dtype: the median tokens/s and MFU over steps 2..N (step 1 warms
up), the last step's loss, and the ratios bf16/fp32.

    .venv/bin/xalign prepare --recipe demo-quick ...   # or any bayling2-mini dataset prepared for Gemma
    .venv/bin/python benchmarks/train_precision.py --data outputs/datasets/bayling2-mini-<id> --steps 8

Results also go to outputs/benchmarks/train_precision.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.matmul_peak import hardware_line  # noqa: E402
from cluster.hardware import choose_dtype, matmul_gflops  # noqa: E402

DTYPES = ("float32", "bfloat16")


def train(dtype: str, data: str, steps: int, peak_tflops: float, out: Path) -> list[dict]:
    """One `xalign train` run; its per-step metrics."""
    cmd = [str(REPO / ".venv" / "bin" / "xalign"), "train", "--recipe", "train-lora-gemma-mini",
           f"data.path={data}", f"model.dtype={dtype}", f"training.max_steps={steps}",
           "batch.global_batch_size=4", "batch.micro_batch_size=1",
           f"checkpoint.every_steps={steps}", f"metrics.peak_tflops_per_worker={peak_tflops:.6f}",
           f"run.output_dir={out}", f"run.name=precision-{dtype}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{dtype} training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    metrics = next(out.glob(f"precision-{dtype}*/metrics.jsonl"))
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a prepared SFT dataset folder for Gemma")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (the recipe's)")
    args = ap.parse_args()

    print(f"hardware: {hardware_line()}", flush=True)
    print(f"dtype auto here: {choose_dtype('auto', use_gpu=False)}", flush=True)
    peak = {d: matmul_gflops(d, args.threads) for d in DTYPES}
    print("matmul peak per worker (GFLOP/s): " + ", ".join(f"{d} {v:.0f}" for d, v in peak.items()), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="xa-precision-") as tmp:
        for dtype in DTYPES:
            print(f"training {args.steps} steps in {dtype} ...", flush=True)
            rows = train(dtype, args.data, args.steps, peak[dtype] / 1000, Path(tmp))
            timed = rows[1:] or rows
            results[dtype] = {
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
                "mfu": statistics.median(r["mfu"] for r in timed if r.get("mfu") is not None),
                "step_time_s": statistics.median(r["step_time_s"] for r in timed),
                "loss_last": rows[-1]["loss"], "losses": [r["loss"] for r in rows],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rows), "peak_gflops": peak[dtype]}
    print("\n| dtype | tokens/s | s/step | MFU (of this dtype's peak) | last loss | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for d, r in results.items():
        print(f"| {d} | {r['tokens_per_s']:.0f} | {r['step_time_s']:.2f} | {r['mfu']:.1%} | {r['loss_last']:.3f} "
              f"| {r['peak_rss_mb']:.0f} |")
    ratio = results["bfloat16"]["tokens_per_s"] / results["float32"]["tokens_per_s"]
    print(f"\nbf16 / fp32 tokens/s: {ratio:.2f}x")
    out = REPO / "outputs" / "benchmarks" / "train_precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hardware_line(), "args": vars(args), "results": results,
                               "bf16_over_fp32": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
