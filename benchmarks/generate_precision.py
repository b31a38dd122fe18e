"""vLLM generation speed in fp32 and bf16 on this host: the same model, prompts and greedy decoding, one run.

Each dtype runs in its own process (vLLM's offline `LLM.generate`, the engine settings xalign's evaluation
uses, only `dtype` differs) over Flores-200 dev prompts in four directions. Reported: output tokens/s over
generation (engine already up), the ratio bf16/fp32, and how many greedy outputs are identical (bf16 rounds
differently, so some greedy paths diverge).

    .venv/bin/python benchmarks/generate_precision.py --model default --sentences 64 --max-tokens 64

Results also go to outputs/benchmarks/generate_precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.eval_throughput import _rows  # noqa: E402
from benchmarks.matmul_peak import hardware_line  # noqa: E402

DTYPES = ("float32", "bfloat16")


def run(args: argparse.Namespace) -> dict:
    from cluster import prompts
    from cluster.engine import EngineSettings, configure_process_env, engine_kwargs
    from cluster.models import resolve_model
    from cluster.tokenizer import stop_token_ids
    from evaluation.generation.requests import clean, messages

    engine = EngineSettings(model=args.model, dtype=args.dtype, max_model_len=512, max_num_seqs=args.sentences)
    path = str(resolve_model(args.model))
    rows = _rows(args.sentences)
    configure_process_env(engine)
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(path)
    llm = LLM(**engine_kwargs(engine, path))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, seed=engine.seed, stop=[prompts.END],
                            stop_token_ids=stop_token_ids(tok, path))
    ids = [prompts.encode_prompt(tok, messages(r)) for r in rows]
    llm.generate([{"prompt_token_ids": x} for x in ids[:2]], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"dtype": args.dtype, "seconds": seconds, "output_tokens": tokens, "tokens_per_s": tokens / seconds,
            "hypotheses": [clean(o.outputs[0].text) for o in outs]}


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
        print("RESULT " + json.dumps(run(args)))
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
        print(f"| {d} | {r['output_tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:.0f} |")
    print(f"\nbf16 / fp32 tokens/s: {ratio:.2f}x; identical greedy outputs: {same}/{args.sentences}")
    out = REPO / "outputs" / "benchmarks" / "generate_precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hardware_line(), "args": vars(args), "bf16_over_fp32": ratio,
                               "identical": same, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
