"""`xalign serve` (host a model with Ray Serve + vLLM) and `xalign translate` (a client for it)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from cluster.cli import add_address_arg, add_recipe_args, console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible API, translation API, playground")
    add_recipe_args(p, default="serve-default")
    add_address_arg(p)
    p.add_argument("--model", default=None, help="model folder or 'default' (packaged Gemma 3 270M)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="LoRA adapter served as model NAME (repeatable)")
    p.add_argument("--host", default=None, help="HTTP host (default: recipe http.host)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: recipe http.port)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded cluster (default: all)")
    p.add_argument("--print-config", action="store_true",
                   help="print the Serve config (RayService serveConfigV2) for this recipe and exit")
    p.add_argument("--detach", action="store_true", help="with --address: deploy and return, leaving it running")
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


def _recipe(args: argparse.Namespace):
    from serving.recipe import RecipeError, load_serve_recipe, parse_adapters

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"engine.model={args.model}")
    if args.host:
        overrides.append(f"http.host={args.host}")
    if args.port:
        overrides.append(f"http.port={args.port}")
    recipe = load_serve_recipe(args.recipe, overrides)
    if args.adapter:
        try:
            adapters = {**recipe.adapters, **parse_adapters(args.adapter)}
        except ValueError as exc:
            raise RecipeError(f"--adapter: {exc}") from None
        recipe = recipe.model_validate({**recipe.model_dump(), "adapters": adapters})
    return recipe


def _serve(args: argparse.Namespace) -> int:
    from serving.serve_config import serve_config_yaml

    recipe = _recipe(args)
    if args.print_config:
        sys.stdout.write(serve_config_yaml(recipe))
        return 0

    from cluster.ray_session import ray_session
    from serving import app

    attached = bool(args.address or os.environ.get("RAY_ADDRESS"))
    with ray_session(args.address, num_cpus=args.num_cpus, quiet=True):
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
