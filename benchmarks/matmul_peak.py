"""This host's own matmul peak, fp32 and bf16: the physical limit that training MFU is measured against.

Square matmuls in torch at 1 thread and at every core, best of several repeats, with the CPU model and its
AMX/AVX-512 flags (hosts differ: bf16 is ~8x fp32 with AMX, ~2x with AVX-512 BF16, ~0.2x with neither).

    .venv/bin/python benchmarks/matmul_peak.py            # ~1 min
    .venv/bin/python benchmarks/matmul_peak.py --json out.json

Other benchmarks import `measure_peak()` so that MFU is always against the same host's number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.hardware import choose_dtype, cpu_flags, matmul_gflops


def hardware_line() -> str:
    """One line naming the CPU, its cores and the flags that decide bf16 speed."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    wanted = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx2") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(wanted) or 'none of note'}"


def measure_peak(threads: int | None = None, n: int = 1024) -> dict:
    """{dtype: {threads: GFLOP/s}} for 1 thread and `threads` (default: every core)."""
    threads = threads or os.cpu_count() or 1
    counts = sorted({1, threads})
    peaks = {d: {t: round(matmul_gflops(d, t, n), 1) for t in counts} for d in ("float32", "bfloat16")}
    auto = choose_dtype("auto", use_gpu=False).dtype
    return {"hardware": hardware_line(), "n": n, "gflops": peaks, "auto_dtype": auto}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = measure_peak(args.threads, args.size)
    print(f"hardware: {res['hardware']}")
    print(f"dtype auto here: {res['auto_dtype']}")
    print("| threads | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for t in res["gflops"]["float32"]:
        f, b = res["gflops"]["float32"][t], res["gflops"]["bfloat16"][t]
        print(f"| {t} | {f:.0f} | {b:.0f} | {b / f:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
