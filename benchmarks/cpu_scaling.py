"""What two busy processes get out of this machine's cores, with no framework in between.

Any 2-way parallel version of a CPU-bound job (Ray Data's `xalign prepare` included) is bounded by how much
faster two independent processes finish twice the work than one process finishes it once. On shared VMs
this is often well below 2x: the "cores" are hyper-threads or are throttled when both are busy. This
probe measures that bound in a minute, on two workloads:

- `langid`: `cluster.langid.detect` over the Flores-200 dev sentences (the data pipeline's hottest
  function, about half of its CPU time);
- `python`: a pure-Python integer loop (no memory traffic to speak of).

    .venv/bin/python benchmarks/cpu_scaling.py --rounds 3

Results go to stdout (a Markdown table) and outputs/benchmarks/cpu_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLORES = REPO.parent / "shared" / "data" / "flores200" / "dev"


def _sentences() -> list[str]:
    return [line for f in sorted(FLORES.glob("*.dev")) for line in f.read_text(encoding="utf-8").splitlines()]


def _langid(passes: int) -> float:
    from cluster import langid

    texts = _sentences()
    langid.detect(texts[0])  # model load is not what is measured
    t = time.perf_counter()
    for _ in range(passes):
        for s in texts:
            langid.detect(s)
    return time.perf_counter() - t


def _python(n: int) -> float:
    t = time.perf_counter()
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return time.perf_counter() - t


WORKLOADS = {"langid": (_langid, 2), "python": (_python, 30_000_000)}


def _run(name: str, copies: int) -> list[float]:
    fn, size = WORKLOADS[name]
    with mp.get_context("spawn").Pool(copies) as pool:
        return pool.map(fn, [size] * copies)


def measure(name: str, rounds: int) -> dict:
    """Alternates one copy alone and two copies at once, `rounds` times; medians of each."""
    alone, pair = [], []
    for _ in range(rounds):
        alone.append(_run(name, 1)[0])
        pair.append(max(_run(name, 2)))
    t1, t2 = statistics.median(alone), statistics.median(pair)
    return {"workload": name, "alone_s": round(t1, 2), "two_at_once_s": round(t2, 2),
            "slowdown_per_process": round(t2 / t1, 3), "two_process_speedup": round(2 * t1 / t2, 3),
            "alone_all": [round(x, 2) for x in alone], "two_at_once_all": [round(x, 2) for x in pair]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), nargs="+", default=sorted(WORKLOADS))
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks")
    args = ap.parse_args()
    if "langid" in args.workload and not FLORES.is_dir():
        raise SystemExit(f"Flores-200 dev not found at {FLORES} (../shared/data beside the checkout)")
    rows = [measure(w, args.rounds) for w in args.workload]
    print("| workload | one process alone s | two at once s (slower copy) | slowdown per process | 2-process speedup |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['alone_s']} | {r['two_at_once_s']} | {r['slowdown_per_process']}× "
              f"| {r['two_process_speedup']}× |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_scaling.json").write_text(json.dumps({"rounds": args.rounds, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
