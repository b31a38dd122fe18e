"""What xalign's Ray Serve app costs on top of vLLM: the same model, engine settings and requests against
`xalign serve` (FastAPI ingress + AsyncLLM in a Serve replica, behind Serve's proxy), the plain vLLM OpenAI
server (`python -m vllm.entrypoints.openai.api_server`) and Ray's own LLM serving (`ray.serve.llm`'s
`build_openai_app` on CPU), alternating in one run. Throughput ratios and latency differences per concurrency
level; output lengths are fixed (`ignore_eos`, checked from `usage`).

    .venv/bin/python benchmarks/serve_overhead.py                              # tiny model, ~5 min on 2 cores
    .venv/bin/python benchmarks/serve_overhead.py --model default --requests 32 --max-tokens 32   # Gemma 3 270M

Results go to stdout (a Markdown table for docs/BENCHMARKS.md), outputs/benchmarks/serve_overhead.json and a plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # busy machines miss Serve's 5 s default
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
os.environ.pop("XALIGN_API_KEY", None)  # both servers without auth: the same work per request

PROMPTS = [
    "Translate into German: The weather is nice today and we are going to the park.",
    "Write a short sentence about the sea.",
    "Translate into French: Where is the train station?",
    "List three colours.",
]


def plain_vllm(recipe, model_path: Path, port: int, log: Path) -> subprocess.Popen:
    """The plain vLLM OpenAI server with the engine settings the xalign replica uses (cluster.engine)."""
    from cluster.engine import engine_kwargs

    kw = engine_kwargs(recipe.engine, str(model_path))
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
           "--model", kw["model"], "--served-model-name", recipe.base_model_name, "--dtype", kw["dtype"],
           "--max-model-len", str(kw["max_model_len"]), "--max-num-seqs", str(kw["max_num_seqs"]),
           "--seed", str(kw["seed"]), "--distributed-executor-backend", kw["distributed_executor_backend"],
           "--disable-uvicorn-access-log", "--disable-log-stats"]
    if kw["enforce_eager"]:
        cmd.append("--enforce-eager")
    if "kv_cache_memory_bytes" in kw:
        cmd += ["--kv-cache-memory-bytes", str(kw["kv_cache_memory_bytes"])]
    # What a Serve replica with num_cpus=1 gets (Ray sets OMP_NUM_THREADS from num_cpus), plus the recipe's env.
    # Both servers run vLLM's AsyncLLM, whose engine core always lives in a process of its own.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **recipe.deployment.env_vars}
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def ray_llm_app(recipe, model_path: Path, max_ongoing: int):
    """`ray.serve.llm` with the same engine settings. On CPU it runs vLLM with the `mp` executor (Ray's choice,
    not overridable there); everything else matches the other two servers."""
    from ray.serve.llm import LLMConfig, build_openai_app

    from cluster.engine import engine_kwargs

    kw = {k: v for k, v in engine_kwargs(recipe.engine, str(model_path)).items()
          if k not in ("model", "distributed_executor_backend")}
    cfg = LLMConfig(
        model_loading_config={"model_id": recipe.base_model_name, "model_source": str(model_path)},
        accelerator_config={"kind": "cpu"},
        placement_group_config={"bundles": [{"CPU": 1}]},
        engine_kwargs=kw,
        deployment_config={"num_replicas": 1, "max_ongoing_requests": max_ongoing},
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **recipe.deployment.env_vars}},
    )
    return build_openai_app({"llm_configs": [cfg]})


def wait_http(url: str, proc: subprocess.Popen | None, timeout: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready within {timeout:.0f} s")


async def load(base: str, model: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    """`requests` completions at fixed output length, `concurrency` in flight; per-request latency."""
    import httpx

    latencies: list[float] = []
    tokens = 0
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def one(i: int) -> None:
            nonlocal tokens
            body = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                    "temperature": 0, "ignore_eos": True}
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/completions", json=body)
                latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            got = r.json()["usage"]["completion_tokens"]
            if got != max_tokens:
                raise RuntimeError(f"{base}: {got} tokens instead of {max_tokens} (ignore_eos not honoured)")
            tokens += got

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": requests, "concurrency": concurrency, "wall_s": wall, "tokens_per_s": tokens / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """Per concurrency: medians over rounds, xalign/plain (and xalign/ray-llm) throughput ratio, latency
    differences."""
    rows = []
    for c in sorted({r["concurrency"] for r in runs["xalign"]}):
        med = {name: {k: statistics.median(r[k] for r in rs if r["concurrency"] == c)
                      for k in ("tokens_per_s", "p50_ms", "p95_ms")} for name, rs in runs.items() if rs}
        x, p = med["xalign"], med["vllm"]
        row = {"concurrency": c, "vllm_tok_s": p["tokens_per_s"], "xalign_tok_s": x["tokens_per_s"],
               "throughput_ratio": x["tokens_per_s"] / p["tokens_per_s"],
               "vllm_p50_ms": p["p50_ms"], "xalign_p50_ms": x["p50_ms"],
               "p50_diff_ms": x["p50_ms"] - p["p50_ms"],
               "vllm_p95_ms": p["p95_ms"], "xalign_p95_ms": x["p95_ms"],
               "p95_diff_ms": x["p95_ms"] - p["p95_ms"]}
        if "ray-llm" in med:
            r = med["ray-llm"]
            row.update({"ray_llm_tok_s": r["tokens_per_s"], "ray_llm_p50_ms": r["p50_ms"],
                        "ray_llm_p95_ms": r["p95_ms"], "ratio_vs_ray_llm": x["tokens_per_s"] / r["tokens_per_s"]})
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    ray_llm = all("ray_llm_tok_s" in r for r in rows)
    head = ("| concurrency | vLLM tok/s | xalign tok/s | ratio | vLLM p50 ms | xalign p50 ms | Δp50 ms | "
            "vLLM p95 ms | xalign p95 ms | Δp95 ms |")
    if ray_llm:
        head += " ray.serve.llm tok/s | ray.serve.llm p50 ms | xalign / ray.serve.llm |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for r in rows:
        line = (f"| {r['concurrency']} | {r['vllm_tok_s']:.0f} | {r['xalign_tok_s']:.0f} | "
                f"{r['throughput_ratio']:.2f} | {r['vllm_p50_ms']:.0f} | {r['xalign_p50_ms']:.0f} | "
                f"{r['p50_diff_ms']:+.0f} | {r['vllm_p95_ms']:.0f} | {r['xalign_p95_ms']:.0f} | "
                f"{r['p95_diff_ms']:+.0f} |")
        if ray_llm:
            line += f" {r['ray_llm_tok_s']:.0f} | {r['ray_llm_p50_ms']:.0f} | {r['ratio_vs_ray_llm']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    cs = [str(r["concurrency"]) for r in rows]
    servers = [("vllm", "plain vLLM server"), ("xalign", "xalign (Ray Serve)")]
    if all("ray_llm_tok_s" in r for r in rows):
        servers.append(("ray_llm", "ray.serve.llm"))
    width = 0.8 / len(servers)
    xs = range(len(rows))
    for i, (key, label) in enumerate(servers):
        shift = (i - (len(servers) - 1) / 2) * width
        a.bar([x + shift for x in xs], [r[f"{key}_tok_s"] for r in rows], width, label=label)
        b.bar([x + shift for x in xs], [r[f"{key}_p50_ms"] for r in rows], width, label=label)
    a.set(xticks=list(xs), xticklabels=cs, xlabel="concurrency", ylabel="output tokens/s", title="Throughput")
    a.legend()
    b.set(xticks=list(xs), xticklabels=cs, xlabel="concurrency", ylabel="ms", title="Request latency (p50)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@contextmanager
def attached_ray(ray_session, num_cpus: int = 2, attempts: int = 3):
    """ray_session(num_cpus), retried: on a saturated machine the raylet can miss Ray's 30 s start window."""
    for attempt in range(1, attempts + 1):
        cm = ray_session(num_cpus=num_cpus)
        try:
            address = cm.__enter__()
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            continue
        try:
            yield address
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            cm.__exit__(None, None, None)
        return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (built locally), 'default' (Gemma 3 270M) or a folder")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per concurrency level")
    ap.add_argument("--no-ray-llm", action="store_true", help="leave out the ray.serve.llm server")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="serve recipe override for both servers, "
                         "e.g. deployment.env_vars.VLLM_ENABLE_V1_MULTIPROCESSING=1")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks")
    args = ap.parse_args()

    from cluster.local_cluster import free_port, kill_pids
    from cluster.models import resolve_model
    from cluster.ray_session import ray_session
    from serving import app
    from serving.recipe import load_serve_recipe

    work = Path(tempfile.mkdtemp(prefix="xa-serve-bench-"))
    if args.model == "tiny":
        from cluster.tiny_model import build_tiny_model

        model_path, recipe_name = build_tiny_model(work / "tiny-model"), "serve-tiny"
    else:
        model_path, recipe_name = resolve_model(args.model), "serve-default"
    recipe = load_serve_recipe(recipe_name, [f"engine.model={model_path}", "served_model_name=bench",
                                             f"limits.max_batch_items={max(64, args.requests)}",
                                             f"deployment.max_ongoing_requests={max(64, args.requests)}",
                                             *args.override])
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    vllm_port = free_port()
    proc = plain_vllm(recipe, model_path, vllm_port, args.out / "serve_overhead_vllm.log")
    runs: dict[str, list[dict]] = {"vllm": [], "xalign": [], "ray-llm": []}
    try:
        # Logical CPUs for three servers' actors; only one of them is under load at a time.
        with attached_ray(ray_session, num_cpus=2 if args.no_ray_llm else 4):
            xalign_url = app.deploy(recipe, port=free_port())
            wait_http(f"http://127.0.0.1:{vllm_port}/health", proc)
            targets = {"vllm": f"http://127.0.0.1:{vllm_port}", "xalign": xalign_url}
            if not args.no_ray_llm:
                from ray import serve

                serve.run(ray_llm_app(recipe, model_path, max(64, args.requests)), name="ray-llm",
                          route_prefix="/ray-llm")
                targets["ray-llm"] = xalign_url.rstrip("/") + "/ray-llm"
                wait_http(targets["ray-llm"] + "/v1/models", None)
            for base in targets.values():  # warm-up: first requests compile/allocate
                asyncio.run(load(base, "bench", 8, 4, args.max_tokens))
            for c in levels:
                for rnd in range(args.rounds):
                    order = list(targets)[rnd % len(targets):] + list(targets)[:rnd % len(targets)]
                    for name in order:
                        r = asyncio.run(load(targets[name], "bench", args.requests, c, args.max_tokens))
                        runs[name].append(r)
                        print(f"[{name:7}] c={c:<3} round {rnd}: {r['tokens_per_s']:7.1f} tok/s  "
                              f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms", flush=True)
            if "ray-llm" in targets:
                serve.delete("ray-llm")
            app.shutdown()
    finally:
        kill_pids([proc.pid], timeout=20)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    rows = summarize(runs)
    result = {"model": str(args.model), "overrides": args.override, "requests": args.requests,
              "max_tokens": args.max_tokens,
              "rounds": args.rounds, "machine": f"{os.cpu_count()} CPU cores, no GPU", "summary": rows, "runs": runs}
    (args.out / "serve_overhead.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.out / "serve_overhead.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
