"""`xalign serve` (host a model with Ray Serve + vLLM) and `xalign translate` (a client for it).

The serve recipe is set like every recipe: `--recipe NAME` and `key.sub=value` overrides; `--model`, `--host`,
`--port` and `--adapter NAME=PATH` are spellings of the overrides `engine.model`, `http.host`, `http.port` and
`adapters.NAME`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from cluster.config import RecipeError
from xalign.commands.args import (
    add_address_arg,
    add_recipe_args,
    add_verbose_arg,
    check_not_given,
    console,
    key_flag,
    library_log,
    log_folder,
    overrides,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible API, translation API, playground")
    add_recipe_args(p, default="serve-default")
    add_address_arg(p)
    key_flag(p, "--model", "engine.model", "model folder or 'default' (packaged Gemma 3 270M)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="LoRA adapter served as model NAME (repeatable; = adapters.NAME=PATH)")
    key_flag(p, "--host", "http.host", "HTTP host")
    key_flag(p, "--port", "http.port", "HTTP port", type=int)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded cluster (default: all)")
    p.add_argument("--print-config", action="store_true",
                   help="print the Serve config (RayService serveConfigV2) for this recipe and exit")
    p.add_argument("--detach", action="store_true", help="with --address: deploy and return, leaving it running")
    add_verbose_arg(p)
    p.set_defaults(func=_serve)

    t = sub.add_parser("translate", help="translate text with a running xalign server")
    t.add_argument("texts", nargs="+", metavar="TEXT", help="text(s) to translate; '-' reads lines from stdin")
    t.add_argument("--to", required=True, dest="target", help="target language (de, deu, deu_Latn, German)")
    t.add_argument("--from", default=None, dest="source", help="source language (default: detected)")
    t.add_argument("--endpoint", default=None, help="server URL (default: $XALIGN_ENDPOINT or http://127.0.0.1:8000)")
    t.add_argument("--model", default=None, help="base model or adapter name (default: the base model)")
    t.add_argument("--api-key-env", default="XALIGN_API_KEY", help="environment variable holding the API key")
    t.add_argument("--json", action="store_true", help="print the server's JSON answer")
    t.add_argument("--timeout", type=float, default=180.0)
    t.set_defaults(func=_translate)


def adapter_overrides(args: argparse.Namespace, given: list[str]) -> list[str]:
    """`--adapter NAME=PATH` as the override `adapters.NAME=PATH` (a name given twice is an error naming it)."""
    out: list[str] = []
    for item in args.adapter:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise RecipeError(f"--adapter {item!r}: expected NAME=PATH")
        if "." in name:
            raise RecipeError(f"--adapter {item!r}: a name with '.' is not a key path; write the override "
                              f"adapters='{{{json.dumps(name)}: {json.dumps(path)}}}' instead")
        key = f"adapters.{name}"
        check_not_given([*given, *out], key, "--adapter", item)
        out.append(f"{key}={json.dumps(path)}")
    return out


def _recipe(args: argparse.Namespace):
    from cluster.config import load_recipe
    from serving.recipe import ServeRecipe

    given = overrides(args)
    return load_recipe(ServeRecipe, args.recipe, [*given, *adapter_overrides(args, given)])


def _serve(args: argparse.Namespace) -> int:
    from serving.serve_config import serve_config_yaml

    recipe = _recipe(args)
    if args.print_config:
        sys.stdout.write(serve_config_yaml(recipe))
        return 0

    from cluster.ray_session import ray_session
    from serving import app

    attached = bool(args.address or os.environ.get("RAY_ADDRESS"))
    with library_log(args, log_folder("outputs"), "serve"), \
            ray_session(args.address, num_cpus=args.num_cpus, quiet=True):
        console.print(f"starting {recipe.base_model_name} "
                      f"({', '.join(recipe.adapters) or 'no adapters'}); the engine takes a while on CPU ...")
        url = app.deploy(recipe, port=recipe.http.port, host=recipe.http.host)
        console.print(f"[green]xalign is serving[/green] at {url}  (playground {url}/, OpenAI base {url}/v1, "
                      f"health {url}/healthz, metrics {url}/metrics)")
        if attached and args.detach:
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print("press Ctrl-C to stop")
        stop.wait()
        console.print("stopping ...")
        app.shutdown(recipe.name)
    return 0


def _translate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from serving.client import APIRequestError, TranslateClient

    texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.texts == ["-"] else args.texts
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    try:
        with TranslateClient(args.endpoint, api_key=key, timeout=args.timeout) as client:
            answer = client.translate(texts, args.target, args.source, args.model)
    except APIRequestError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    except Exception as exc:  # connection refused, DNS, timeouts: one line, not a traceback
        console.print(f"[red]error:[/red] could not reach the server: {exc}")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(answer, ensure_ascii=False, indent=2) + "\n")
        return 0
    if len(answer["items"]) == 1:
        console.print(answer["items"][0]["translation"], markup=False)
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "translation", "source", "output", "off-target", "guard"):
        table.add_column(col)
    for it in answer["items"]:
        src = it.get("source_lang") or {}
        out = it.get("output_lang") or {}
        off = {True: "[red]yes[/red]", False: "no", None: "?"}[it.get("off_target")]
        g = it["guard"]
        guard = g["action"] + (f" ({'recovered' if g.get('recovered') else 'not recovered'})"
                               if g["action"] == "retried" else "")
        table.add_row(str(it["index"]), it["translation"], src.get("code", "?") + (" (detected)" if src.get("detected")
                      else ""), out.get("code", "?"), off, guard)
    console.print(table)
    return 0
