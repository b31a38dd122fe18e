"""What computing the LM head only at supervised positions, in chunks, saves on Gemma 3 270M (262k vocabulary).

One forward + backward of the SFT loss on a packed micro-batch (default 4 rows x 256 tokens, half of each packed
sample's tokens supervised), with the LoRA of `train-lora-gemma-mini` (trainable chat-marker rows included
unless --no-tokens), fp32, one process:

- plain: the model's full logits [B, L, V], upcast, cross-entropy with ignored labels (the former loss);
- chunked: `pipelines.train.sft.sft_loss_sum` (final hidden states at supervised positions only, projected in
  chunks with the fp32 loss per chunk, recomputed in backward).

Each variant runs in its own process (peak RSS is per process), alternating, after one warm-up step.

    .venv/bin/python benchmarks/lm_head_loss.py                      # ~2 min on a quiet 2-core machine
    .venv/bin/python benchmarks/lm_head_loss.py --response 1.0       # every token supervised (the worst case)

Prints the CPU model and whether it has AMX, then a Markdown table; results also go to
outputs/benchmarks/lm_head_loss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IGNORE = -100


def cpu_line() -> tuple[str, bool]:
    """(lscpu's model name, whether the CPU has AMX tiles): bf16/fp32 matmul speed differs a lot between hosts."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return model, "amx_tile" in flags


def batch(rows: int, seq: int, response: float, sample_len: int = 64) -> dict:
    """Packed rows of `sample_len`-token samples, each with its last `response` fraction supervised."""
    import numpy as np

    rng = np.random.default_rng(0)
    out: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "sample_ids": []}
    for r in range(rows):
        ids = rng.integers(10, 200_000, seq).tolist()
        labels, pos = [], []
        for start in range(0, seq, sample_len):
            n = min(sample_len, seq - start)
            prompt = n - max(1, round(n * response))
            labels += [IGNORE] * prompt + ids[start + prompt:start + n]
            pos += list(range(n))
        for name, value in (("input_ids", ids), ("labels", labels), ("position_ids", pos), ("sample_ids", [f"r{r}"])):
            out[name].append(value)
    cols = {}
    for name, values in out.items():
        col = np.empty(len(values), dtype=object)
        col[:] = [np.asarray(v) for v in values]
        cols[name] = col
    return cols


def plain_loss_sum(model, mb):
    """The former SFT loss: full logits for every position, upcast, cross-entropy ignoring unsupervised labels."""
    import torch.nn.functional as F

    logits = model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False).logits[:, :-1].float()
    target = mb.labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    import torch

    from cluster.config import load_recipe
    from cluster.models import resolve_model
    from pipelines.train.collate import collate_sft
    from pipelines.train.model import build_policy
    from pipelines.train.recipe import TrainRecipe
    from pipelines.train.sft import sft_loss_sum

    torch.set_num_threads(args.threads)
    overrides = ["model.dtype=float32", *([] if args.tokens else ["lora.trainable_tokens=[]"])]
    recipe = load_recipe(TrainRecipe, "train-lora-gemma-mini", overrides)
    model_dir = resolve_model(recipe.model.base)
    torch.manual_seed(0)
    model = build_policy(recipe, model_dir)
    model.train()
    mb = collate_sft(batch(args.rows, args.seq, args.response), pad_id=0)
    fn = sft_loss_sum if variant == "chunked" else plain_loss_sum
    times, loss = [], None
    for i in range(args.repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = fn(model, mb)
        loss.backward()
        if i:  # the first step warms up allocator and kernels
            times.append(time.perf_counter() - t0)
    grad_norm = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None) ** 0.5
    return {"variant": variant, "seconds": times, "loss_sum": float(loss), "grad_norm": grad_norm,
            "supervised_tokens": mb.loss_tokens, "tokens": mb.tokens,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--response", type=float, default=0.5, help="supervised fraction of each packed sample")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per variant and round (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the two variants' processes")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-tokens", dest="tokens", action="store_false", help="LoRA without trainable token rows")
    ap.add_argument("--variant", choices=["plain", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return

    model, amx = cpu_line()
    print(f"CPU: {model}; AMX: {'yes' if amx else 'no'}; threads: {args.threads}", flush=True)
    results: dict[str, list[dict]] = {"plain": [], "chunked": []}
    forwarded = list(sys.argv[1:])
    for _ in range(args.rounds):
        for variant in ("plain", "chunked"):
            proc = subprocess.run([sys.executable, __file__, "--variant", variant, *forwarded], capture_output=True,
                                  text=True, cwd=REPO)
            if proc.returncode:
                sys.exit(f"{variant} failed:\n{proc.stderr[-4000:]}")
            results[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {}
    for variant, runs in results.items():
        secs = [s for r in runs for s in r["seconds"]]
        summary[variant] = {"median_s": statistics.median(secs), "min_s": min(secs), "steps": len(secs),
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "loss_sum": runs[0]["loss_sum"],
                            "grad_norm": runs[0]["grad_norm"]}
    first = results["plain"][0]
    print(f"\nbatch {args.rows} x {args.seq} tokens, {first['supervised_tokens']} supervised; LoRA "
          f"{'with' if args.tokens else 'without'} trainable token rows; fp32\n")
    print("| loss | forward+backward (median, s) | min (s) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for variant, s in summary.items():
        print(f"| {variant} | {s['median_s']:.2f} | {s['min_s']:.2f} | {s['peak_rss_mb']:.0f} |")
    speedup = summary["plain"]["median_s"] / summary["chunked"]["median_s"]
    rel = abs(summary["chunked"]["loss_sum"] - summary["plain"]["loss_sum"]) / abs(summary["plain"]["loss_sum"])
    grel = abs(summary["chunked"]["grad_norm"] - summary["plain"]["grad_norm"]) / summary["plain"]["grad_norm"]
    print(f"\nspeedup {speedup:.2f}x; loss agrees to {rel:.1e}, gradient norm to {grel:.1e} (relative)")
    out = REPO / "outputs" / "benchmarks" / "lm_head_loss.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": model, "amx": amx, "args": vars(args), "summary": summary,
                               "speedup": speedup, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
