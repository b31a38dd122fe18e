"""Evaluation generation throughput: Ray Data + vLLM engine actors (what `xalign evaluate` runs) vs vLLM's own
offline `LLM.generate` vs sequential requests to a REST API, same model, same prompts, one run.

    .venv/bin/python benchmarks/eval_throughput.py --model default --sentences 64 --max-tokens 48

Each method runs in its own process, one after the other, with the same thread count, greedy decoding and
the same canonical prompts (`cluster.prompts`). The REST baseline is a plain vLLM OpenAI server
(`python -m vllm.entrypoints.openai.api_server`) driven by xalign's endpoint client with one request in
flight; `--rest-url` points it at another server (e.g. `xalign serve`) instead. Reported: sentences/s over
generation only (engine already up) and end to end (engine start-up included), and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DIRECTIONS = ["en-de", "de-en", "en-zh", "zh-en"]


def _rows(n: int) -> list[dict[str, Any]]:
    """n requests from Flores-200 dev, spread over four directions."""
    from cluster.locations import data_root
    from evaluation.directions import Direction
    from evaluation.generation.requests import build_requests
    from evaluation.loaders import open_test_set

    ts = open_test_set("flores200", data_root() / "flores200" / "dev_subset510")
    per = -(-n // len(DIRECTIONS))
    data = [ts.load(Direction.parse(d)).head(per) for d in DIRECTIONS]
    rows = build_requests(data)
    order = sorted(rows, key=lambda r: (int(r["id"]) if r["id"].isdigit() else 0, r["direction"]))[:n]
    return [{**r, "idx": i} for i, r in enumerate(order)]


def _settings(args: argparse.Namespace):
    from cluster.engine import EngineSettings
    from evaluation.recipe import GenerationSettings

    engine = EngineSettings(model=args.model, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                            dtype=getattr(args, "dtype", None) or "auto")
    gen = GenerationSettings(batch_size=args.batch_size, concurrency=1, num_cpus=args.threads,
                             max_tokens=args.max_tokens)
    return engine, gen


def method_ray_data(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.models import resolve_model
    from cluster.ray_session import ray_session
    from evaluation.generation import vllm_batch

    engine, gen = _settings(args)
    path = str(resolve_model(args.model))
    rows = _rows(args.sentences)
    with ray_session(num_cpus=max(2, int(args.threads))):
        t0 = time.time()
        out = vllm_batch.generate(rows, path, engine, gen)
        total = time.time() - t0
    span = max(r["batch_end"] for r in out) - min(r["batch_start"] for r in out)
    return {"sentences": len(out), "total_s": total, "generate_s": span,
            "output_tokens": sum(r["output_tokens"] for r in out), "hypotheses": [r["hypothesis"] for r in out]}


def method_llm_generate(args: argparse.Namespace) -> dict[str, Any]:
    from cluster import prompts
    from cluster.engine import configure_process_env, engine_kwargs
    from cluster.models import resolve_model
    from cluster.tokenizer import stop_token_ids
    from evaluation.generation.requests import clean, messages

    engine, gen = _settings(args)
    path = str(resolve_model(args.model))
    rows = _rows(args.sentences)
    t0 = time.time()
    configure_process_env(engine)
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(path)
    llm = LLM(**engine_kwargs(engine, path))
    params = SamplingParams(max_tokens=gen.max_tokens, temperature=0.0, seed=engine.seed, stop=[prompts.END],
                            stop_token_ids=stop_token_ids(tok, path))
    t1 = time.time()
    ids = [prompts.encode_prompt(tok, messages(r)) for r in rows]
    outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    t2 = time.time()
    return {"sentences": len(outs), "total_s": t2 - t0, "generate_s": t2 - t1,
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
            "hypotheses": [clean(o.outputs[0].text) for o in outs]}


def _start_server(args: argparse.Namespace, path: str) -> tuple[subprocess.Popen, str, float]:
    import httpx

    from cluster.engine import EngineSettings, engine_dtype
    from cluster.local_cluster import free_port

    port = free_port()
    dtype = engine_dtype(EngineSettings()).dtype  # what xalign's engine runs on this host
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(int(args.threads)),
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", dtype, "--max-model-len", str(args.max_model_len),
           "--max-num-seqs", str(args.max_num_seqs), "--enforce-eager", "--distributed-executor-backend", "uni",
           "--seed", "0"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while time.time() - t0 < 600:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url, time.time() - t0
        except httpx.HTTPError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("vLLM server did not start in 600 s")


def method_rest_sequential(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.models import resolve_model
    from evaluation.generation.endpoint import EndpointClient
    from evaluation.recipe import EndpointSettings

    _, gen = _settings(args)
    rows = _rows(args.rest_sentences or args.sentences)
    proc, startup = None, 0.0
    url = args.rest_url
    if url is None:
        proc, url, startup = _start_server(args, str(resolve_model(args.model)))
    try:
        client = EndpointClient(EndpointSettings(url=url, concurrency=1), gen)
        client.identity()
        t0 = time.time()
        out = client.generate(rows)
        span = time.time() - t0
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    return {"sentences": len(out), "total_s": startup + span, "generate_s": span, "output_tokens": None,
            "hypotheses": [r["hypothesis"] for r in out], "server": "xalign/other" if args.rest_url else "vllm"}


METHODS = {"ray_data": method_ray_data, "llm_generate": method_llm_generate, "rest_sequential": method_rest_sequential}


def _child(args: argparse.Namespace, method: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--method", method]
    for key in ("model", "sentences", "rest_sentences", "max_tokens", "batch_size", "threads", "max_model_len",
                "max_num_seqs", "rest_url"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(int(args.threads))}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-4000:]}")
    return json.loads(marker[-1][len("RESULT "):])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model folder or 'default' (Gemma 3 270M)")
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--rest-sentences", type=int, default=None, help="fewer for the slow sequential baseline")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=float, default=1, help="CPU threads per engine (Ray actor num_cpus)")
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--rest-url", default=None, help="an already running server instead of a plain vLLM one")
    p.add_argument("--method", choices=list(METHODS), default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    if args.method:
        res = METHODS[args.method](args)
        print("RESULT " + json.dumps(res))
        return 0

    results = {}
    for method in METHODS:
        print(f"running {method} ...", flush=True)
        results[method] = _child(args, method)
    base = results["ray_data"]
    n_same = min(len(base["hypotheses"]), len(results["llm_generate"]["hypotheses"]))
    agree = sum(a == b for a, b in zip(base["hypotheses"][:n_same], results["llm_generate"]["hypotheses"][:n_same]))
    print(f"\nmodel={args.model} sentences={args.sentences} max_tokens={args.max_tokens} threads={args.threads}")
    print(f"{'method':<18}{'sentences':>10}{'gen s':>9}{'sent/s':>9}{'total s':>9}{'sent/s e2e':>12}")
    for name, r in results.items():
        print(f"{name:<18}{r['sentences']:>10}{r['generate_s']:>9.2f}{r['sentences'] / r['generate_s']:>9.2f}"
              f"{r['total_s']:>9.2f}{r['sentences'] / r['total_s']:>12.2f}")

    def rate(r: dict[str, Any], key: str) -> float:
        return r["sentences"] / r[key]

    summary = {
        "ray_data_vs_llm_generate": rate(base, "generate_s") / rate(results["llm_generate"], "generate_s"),
        "ray_data_vs_llm_generate_e2e": rate(base, "total_s") / rate(results["llm_generate"], "total_s"),
        "ray_data_vs_rest_sequential": rate(base, "generate_s") / rate(results["rest_sequential"], "generate_s"),
        "identical_hypotheses_ray_vs_llm": f"{agree}/{n_same}",
    }
    for k, v in summary.items():
        print(f"{k}: {v:.2f}x" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        slim = {k: {kk: vv for kk, vv in v.items() if kk != "hypotheses"} for k, v in results.items()}
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": slim, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
