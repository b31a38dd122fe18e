"""A bounded load test of xalign's Serve app: mixed chat / translate / batch-translate requests from an async
httpx client over loopback, a fixed number of them at a fixed concurrency, then it stops. Counts every status
(every 5xx with its error code, so none goes unexplained), samples the engine replica's RSS before and after,
and reports p50/p95/p99 latency and throughput.

    .venv/bin/python benchmarks/serve_load.py                                  # tiny model, 2,000 requests at 32
    .venv/bin/python benchmarks/serve_load.py --model default --requests 200   # the packaged Gemma 3 270M

Results go to stdout (a Markdown table for docs/BENCHMARKS.md), outputs/benchmarks/serve_load.json and a plot.
`tests/serving/test_serve_load.py` runs the same `run_load` with 200 requests and asserts the outcomes only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SENTENCES = [
    "The weather is nice today and we are going to the park.",
    "Where is the train station, please?",
    "Our meeting has been moved to Thursday afternoon.",
    "She reads a book every evening before going to sleep.",
    "The museum opens at nine and closes at six.",
    "Could you send me the report by the end of the week?",
]
TARGETS = ["de", "fr", "es", "ja", "sw", "zho_Hans", "deu", "por_Latn"]
CHATS = ["Write a short sentence about the sea.", "List three colours.", "Say hello in Spanish.",
         "What is the capital of France?"]


@dataclass
class Call:
    kind: str  # chat | translate | translate_batch | unauthorized
    path: str
    body: dict[str, Any]
    auth: bool = True


def request_mix(n: int, models: list[str], max_tokens: int, seed: int = 0, unauthorized_every: int = 0) -> list[Call]:
    """`n` valid requests, deterministic for a seed: ~40% chat, ~40% single translate (half with the source
    detected), ~20% batch translate of 2-4 texts; optionally every k-th one without a valid key (expect 401)."""
    rng = random.Random(seed)
    calls: list[Call] = []
    for i in range(n):
        model = models[i % len(models)]
        roll = rng.random()
        if unauthorized_every and i % unauthorized_every == unauthorized_every - 1:
            calls.append(Call("unauthorized", "/v1/translate", {"text": rng.choice(SENTENCES), "target_lang": "de"},
                              auth=False))
        elif roll < 0.4:
            messages = [{"role": "user", "content": rng.choice(CHATS)}]
            calls.append(Call("chat", "/v1/chat/completions", {
                "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.7, "seed": i}))
        elif roll < 0.8:
            body: dict[str, Any] = {"text": rng.choice(SENTENCES), "target_lang": rng.choice(TARGETS),
                                    "model": model, "max_tokens": max_tokens}
            if rng.random() < 0.5:
                body["source_lang"] = "en"
            calls.append(Call("translate", "/v1/translate", body))
        else:
            texts = rng.sample(SENTENCES, rng.randint(2, 4))
            calls.append(Call("translate_batch", "/v1/translate", {
                "texts": texts, "source_lang": "eng_Latn", "target_lang": rng.choice(TARGETS), "model": model,
                "max_tokens": max_tokens}))
    return calls


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    wall_s: float
    statuses: dict[str, int]  # "kind:status" -> count
    server_errors: list[dict[str, Any]]  # every 5xx: kind, status, error code and message
    client_errors: list[dict[str, Any]]  # transport failures (timeouts, resets): a hang or a crash
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # per kind, successful requests only
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_samples_mb: list[float] = field(default_factory=list)  # before, then after each round

    @property
    def all_latencies(self) -> list[float]:
        return sorted(x for k, v in self.latencies_ms.items() if k != "unauthorized" for x in v)

    def percentiles(self) -> dict[str, float]:
        lat = self.all_latencies
        if not lat:
            return {}
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        return {"p50_ms": statistics.median(lat), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": lat[-1]}

    def summary(self) -> dict[str, Any]:
        ok = sum(v for k, v in self.statuses.items() if k.endswith(":200"))
        return {"requests": self.requests, "concurrency": self.concurrency, "wall_s": round(self.wall_s, 2),
                "ok": ok, "requests_per_s": round(self.requests / self.wall_s, 2),
                "server_errors": len(self.server_errors), "client_errors": len(self.client_errors),
                **{k: round(v, 1) for k, v in self.percentiles().items()}, **self.rss_mb}


async def run_load(base_url: str, api_key: str | None, calls: list[Call], concurrency: int,
                   timeout_s: float = 600, progress: bool = True) -> LoadResult:
    """Send every call with at most `concurrency` in flight; never raises for a bad answer, records it."""
    import httpx
    from tqdm import tqdm

    statuses: Counter[str] = Counter()
    server_errors: list[dict[str, Any]] = []
    client_errors: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = {}
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for c in calls:
        queue.put_nowait(c)
    bar = tqdm(total=len(calls), desc="requests", disable=not progress, mininterval=2)
    good = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    bad = {"Authorization": "Bearer not-the-key"}

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                call = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                r = await client.post(call.path, json=call.body, headers=good if call.auth else bad)
            except httpx.HTTPError as exc:
                client_errors.append({"kind": call.kind, "error": f"{type(exc).__name__}: {exc}"})
            else:
                statuses[f"{call.kind}:{r.status_code}"] += 1
                if r.status_code == 200:
                    latencies.setdefault(call.kind, []).append(1000 * (time.perf_counter() - t0))
                elif r.status_code >= 500:
                    try:
                        err = r.json().get("error", {})
                    except ValueError:
                        err = {"message": r.text[:300]}
                    server_errors.append({"kind": call.kind, "status": r.status_code, "code": err.get("code"),
                                          "message": str(err.get("message"))[:300]})
            bar.update()

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    bar.close()
    return LoadResult(len(calls), concurrency, time.perf_counter() - started, dict(statuses), server_errors,
                      client_errors, latencies)


# ---- the engine replica's memory --------------------------------------------------------------------


def replica_pids(app_name: str, deployment: str = "XalignServer") -> list[int]:
    """PIDs of the app's live engine replicas, from the GCS actor table of this process's cluster (works
    without a dashboard, unlike `ray.util.state`)."""
    import ray

    return sorted(int(a["Pid"]) for a in ray._private.state.actors().values()
                  if a["ActorClassName"] == f"ServeReplica:{app_name}:{deployment}" and a["State"] == "ALIVE")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the replicas and their children (a multiprocess vLLM engine core), in MiB."""
    import psutil

    total = 0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    return total / 2**20


def measured_load(base_url: str, api_key: str | None, app_name: str, calls: list[Call], concurrency: int,
                  warmup: list[Call], rounds: int = 2, progress: bool = True) -> LoadResult:
    """Warm up (first requests allocate caches, load adapters, compile), then run the calls in `rounds` equal
    parts, sampling the engine replica's RSS before and after each: growth that continues into the last round
    is what a leak looks like; growth in the first round only is the allocator settling."""
    asyncio.run(run_load(base_url, api_key, warmup, concurrency, progress=False))
    pids = replica_pids(app_name)
    samples = [rss_mb(pids)]
    size = -(-len(calls) // rounds)
    parts = [run_load(base_url, api_key, calls[i:i + size], concurrency, progress=progress)
             for i in range(0, len(calls), size)]
    results = []
    for part in parts:
        results.append(asyncio.run(part))
        samples.append(rss_mb(replica_pids(app_name)))
    result = _merge(results)
    result.rss_mb = {"rss_before_mb": round(samples[0], 1), "rss_after_mb": round(samples[-1], 1),
                     "rss_growth_mb": round(samples[-1] - samples[0], 1),
                     "rss_last_round_growth_mb": round(samples[-1] - samples[-2], 1),
                     "replica_restarted": float(replica_pids(app_name) != pids)}
    result.rss_samples_mb = [round(x, 1) for x in samples]
    return result


def _merge(parts: list[LoadResult]) -> LoadResult:
    statuses: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {}
    for r in parts:
        statuses.update(r.statuses)
        for k, v in r.latencies_ms.items():
            latencies.setdefault(k, []).extend(v)
    return LoadResult(sum(r.requests for r in parts), parts[0].concurrency, sum(r.wall_s for r in parts),
                      dict(statuses), [e for r in parts for e in r.server_errors],
                      [e for r in parts for e in r.client_errors], latencies)


# ---- report -----------------------------------------------------------------------------------------


def markdown(result: LoadResult, model: str) -> str:
    s = result.summary()
    lines = ["| model | requests | concurrency | ok | 5xx | transport errors | req/s | p50 ms | p95 ms | p99 ms | "
             "RSS before MiB | RSS after MiB | growth MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {model} | {s['requests']} | {s['concurrency']} | {s['ok']} | {s['server_errors']} | "
             f"{s['client_errors']} | {s['requests_per_s']:.1f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
             f"{s['p99_ms']:.0f} | {s['rss_before_mb']:.0f} | {s['rss_after_mb']:.0f} | {s['rss_growth_mb']:+.0f} |"]
    per_kind = ["", "| kind | requests | ok | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    for kind, lat in sorted(result.latencies_ms.items()):
        lat = sorted(lat)
        n = sum(v for k, v in result.statuses.items() if k.startswith(f"{kind}:"))
        per_kind.append(f"| {kind} | {n} | {len(lat)} | {statistics.median(lat):.0f} | "
                        f"{lat[min(len(lat) - 1, int(0.95 * len(lat)))]:.0f} |")
    return "\n".join(lines + per_kind)


def plot(result: LoadResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, lat in sorted(result.latencies_ms.items()):
        ax.hist([x / 1000 for x in lat], bins=40, alpha=0.6, label=f"{kind} ({len(lat)})")
    pct = result.percentiles()
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        ax.axvline(pct[name] / 1000, ls="--", lw=1, color="k")
        ax.text(pct[name] / 1000, ax.get_ylim()[1] * 0.95, name[:3], rotation=90, va="top", ha="right")
    ax.set(xlabel="latency (s)", ylabel="requests",
           title=f"{result.requests} requests at concurrency {result.concurrency}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (built locally), 'default' (Gemma 3 270M) or a folder")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=4, help="RSS is sampled after each of these equal parts")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks")
    args = ap.parse_args()

    from cluster.local_cluster import free_port
    from cluster.models import resolve_model
    from cluster.ray_session import ray_session
    from serving import app
    from serving.recipe import load_serve_recipe

    work = Path(tempfile.mkdtemp(prefix="xa-serve-load-"))
    if args.model == "tiny":
        from cluster.tiny_model import build_tiny_model

        model_path, recipe_name = build_tiny_model(work / "tiny-model"), "serve-tiny"
    else:
        model_path, recipe_name = resolve_model(args.model), "serve-default"
    # Concurrency 32 queues on a 2-core machine: the whole-request timeout must cover the queue, not the work.
    recipe = load_serve_recipe(recipe_name, [f"engine.model={model_path}", "served_model_name=bench",
                                             "limits.request_timeout_s=600",
                                             f"deployment.max_ongoing_requests={max(64, args.concurrency)}"])
    api_key = secrets.token_hex(16)
    os.environ["XALIGN_API_KEY"] = api_key  # auth on, as in production; reaches the replica via the session env
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with ray_session(num_cpus=2):
            url = app.deploy(recipe, port=free_port())
            try:
                calls = request_mix(args.requests, ["bench"], args.max_tokens, seed=args.seed)
                warmup = request_mix(2 * args.concurrency, ["bench"], args.max_tokens, seed=args.seed + 1)
                result = measured_load(url, api_key, recipe.name, calls, args.concurrency, warmup,
                                       rounds=args.rounds)
            finally:
                app.shutdown(recipe.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = result.summary()
    (args.out / "serve_load.json").write_text(json.dumps(
        {"model": args.model, "max_tokens": args.max_tokens, "summary": summary, **asdict(result)}, indent=1))
    plot(result, args.out / "serve_load.png")
    print(markdown(result, args.model))
    print(json.dumps(summary, indent=1))
    for err in result.server_errors[:20] + result.client_errors[:20]:
        print("error:", err)
    return 0 if not result.server_errors and not result.client_errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
