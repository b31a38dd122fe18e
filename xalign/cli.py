"""The `xalign` command line: one entry point, one subcommand per capability.

Each subcommand lives in `xalign.commands` with `register(subparsers)`, so this module stays a thin
router and `build_parser()` is importable by tests and the Helm chart checks (every RayJob
entrypoint must parse here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from cluster.config import RecipeError
from xalign import demo
from xalign.commands import evaluate, prepare, serve, train
from xalign.commands.args import Parser, add_address_arg, add_recipe_args, console

__all__ = ["add_address_arg", "add_recipe_args", "build_parser", "console", "main"]

# Modules that add subcommands, in the order `xalign --help` lists them.
COMMAND_MODULES = (prepare, train, serve, evaluate, demo)


def _doctor(args: argparse.Namespace) -> int:
    from xalign.doctor import run_checks

    table = Table(title="xalign doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("value")
    checks = run_checks()
    for c in checks:
        table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.value)
    console.print(table)
    bad = [c.name for c in checks if not c.ok]
    console.print("[green]all checks passed[/green]" if not bad else f"[red]failed: {', '.join(bad)}[/red]")
    return 0 if not bad else 1


def _cluster(args: argparse.Namespace) -> int:
    from cluster import local_cluster as lc

    def print_nodes(st: lc.ClusterState) -> None:
        """One line per node: its raylet's PID (or that it is gone, e.g. after `kill_worker`) and Ray node id."""
        try:
            ids = lc.node_ids(st)
        except Exception:  # a status line without ids beats none while the dashboard is down
            ids = {}
        cpus = {"head": st.num_cpus, **{w.label: w.num_cpus for w in st.workers}}
        for label, pid in lc.raylet_pids(st).items():
            state = f"raylet PID {pid} alive" if pid else "raylet not running"
            n = cpus[label] if cpus[label] is not None else "all"
            console.print(f"  {label:<10} {state}  CPUs: {n}  node id: {ids.get(label, '-')}", soft_wrap=True)

    state_dir = Path(args.state_dir) if args.state_dir else None
    if args.action == "up":
        st = lc.up(state_dir, num_cpus=args.num_cpus, workers=args.workers, worker_cpus=args.worker_cpus)
        console.print(f"Ray head: {st.address}  dashboard: {st.dashboard_url}  temp dir: {st.temp_dir}")
        console.print(f"PIDs: {' '.join(map(str, lc.cluster_pids(st.temp_dir)))}")
        if st.workers:
            print_nodes(st)
            console.print(f'Force a task onto worker i with resources={{"{lc.WORKER_RESOURCE}-<i>": 0.01}}')
        console.print("Submit jobs with:")
        console.print(f"  {st.submit_command()}")
        return 0
    if args.action == "status":
        st, pids = lc.status(state_dir)
        if st is None or not pids:
            console.print("no xalign cluster is running" + (f" (stale state in {st.state_dir})" if st else ""))
            return 1
        console.print(f"running: {st.address}  dashboard: {st.dashboard_url}  {len(pids)} processes")
        print_nodes(st)
        console.print(f"  {st.submit_command()}")
        return 0
    stopped = lc.down(state_dir)
    console.print(f"stopped {len(stopped)} processes" if stopped else "no xalign cluster was running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xalign", description="Multilingual alignment of LLMs on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="report versions, devices, COMET env, model cache")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("cluster", help="a private local Ray head (and worker nodes) for `ray job submit`")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", default=None, help="where the cluster's state is kept (default: cache)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="the head's CPUs (default: the machine's; 1 when --workers is given)")
    p.add_argument("--workers", type=int, default=0,
                   help="worker nodes to add, each its own raylet on this machine (up only)")
    p.add_argument("--worker-cpus", type=int, default=1, help="CPUs of each worker node (up only)")
    p.set_defaults(func=_cluster)

    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2) and --help (0), as an exit status
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except RecipeError as exc:
        console.print(f"[red]recipe error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
