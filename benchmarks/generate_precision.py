"""vLLM generation speed in fp32 and bf16 on this host: the same model, prompts and greedy decoding, one run.

Each dtype runs in its own process (`benchmarks/eval_throughput.py`'s offline `LLM.generate` method, the
engine settings xalign's evaluation uses, only `dtype` differs) over Flores-200 dev prompts in four
directions. Reported: output tokens/s over generation (engine already up), the ratio bf16/fp32, and how many
greedy outputs are identical (bf16 rounds differently, so some greedy paths diverge).

    .venv/bin/python benchmarks/generate_precision.py --model default --sentences 64 --max-tokens 64

Results also go to outputs/benchmarks/generate_precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.eval_throughput import method_llm_generate  # noqa: E402
from benchmarks.matmul_peak import hardware_line  # noqa: E402

DTYPES = ("float32", "bfloat16")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model folder or 'default' (Gemma 3 270M)")
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", choices=DTYPES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.dtype:
        # evaluation's engine settings, batched like an evaluation; only the dtype differs between the runs
        args.batch_size, args.threads, args.max_model_len, args.max_num_seqs = args.sentences, 2, 512, args.sentences
        res = method_llm_generate(args)
        res["tokens_per_s"] = res["output_tokens"] / res["generate_s"]
        print("RESULT " + json.dumps(res))
        return 0

    print(f"hardware: {hardware_line()}", flush=True)
    results = {}
    for dtype in DTYPES:
        print(f"generating in {dtype} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--dtype", dtype], cwd=REPO,
                              capture_output=True, text=True)
        marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not marker:
            sys.exit(f"{dtype} failed:\n{proc.stderr[-4000:]}")
        results[dtype] = json.loads(marker[-1][len("RESULT "):])
    same = sum(a == b for a, b in zip(results["float32"]["hypotheses"], results["bfloat16"]["hypotheses"]))
    ratio = results["bfloat16"]["tokens_per_s"] / results["float32"]["tokens_per_s"]
    print(f"\n{args.sentences} prompts, greedy, <= {args.max_tokens} new tokens, one engine process\n")
    print("| dtype | output tokens | seconds | tokens/s |")
    print("|---|---|---|---|")
    for d, r in results.items():
        print(f"| {d} | {r['output_tokens']} | {r['generate_s']:.2f} | {r['tokens_per_s']:.0f} |")
    print(f"\nbf16 / fp32 tokens/s: {ratio:.2f}x; identical greedy outputs: {same}/{args.sentences}")
    out = REPO / "outputs" / "benchmarks" / "generate_precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hardware_line(), "args": vars(args), "bf16_over_fp32": ratio,
                               "identical": same, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
