"""Arguments and console shared by every subcommand: the one recipe interface (`--recipe` + `key=value` overrides).

A convenience flag such as `xalign evaluate --model X` is defined as exactly the override `engine.model=X`
(`key_flag`): it joins the overrides that `cluster.config.load_recipe` parses, so there is one way a value reaches
a recipe, and giving the same key both ways is an error naming the key rather than one silently winning.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cluster.config import RecipeError
from cluster.logs import LibraryLog, library_output_to

console = Console(stderr=False, highlight=False)


class Parser(argparse.ArgumentParser):
    """An argument parser whose sub-commands may have a default: with `default_command = "run"`,
    `xalign evaluate --suite X` parses as `xalign evaluate run --suite X` while `xalign evaluate compare A B`
    stays a sub-command of its own."""

    default_command: str | None = None
    commands: argparse._SubParsersAction | None = None

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction:
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        if self.default_command is not None and self.commands is not None and args is not None:
            args = list(args)
            if not args or (args[0] not in self.commands.choices and args[0] not in ("-h", "--help")):
                args = [self.default_command, *args]
        return super().parse_known_args(args, namespace)


def add_recipe_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The shared recipe interface: `--recipe NAME` then `key.sub=value` overrides."""
    p.add_argument("--recipe", default=default, help="recipe name under recipes/ or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides")


def add_address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="attach to this Ray cluster (default: RAY_ADDRESS, else embedded)")


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print Ray, DeepSpeed, torch, vLLM and transformers output here too (default: to a log file)")


@dataclass(frozen=True)
class KeyFlag:
    """A flag that is exactly the override `key=<its value>` (plus fixed `also` keys, e.g. --resume's resume=true)."""

    flag: str
    key: str
    also: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")  # argparse's own: `--comet-model` -> args.comet_model


def key_flag(p: argparse.ArgumentParser, flag: str, key: str, help: str, *, also: dict[str, Any] | None = None,
             **kwargs: Any) -> None:
    """Add `flag` as a spelling of the override `key=VALUE`; its help names the key."""
    spec = KeyFlag(flag, key, also or {})
    spelled = " ".join([f"{key}=VALUE", *(f"{k}={json.dumps(v)}" for k, v in spec.also.items())])
    p.add_argument(flag, dest=spec.dest, default=None, help=f"{help} (= {spelled})", **kwargs)
    p.set_defaults(key_flags=(*(p.get_default("key_flags") or ()), spec))


def override_key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _overlaps(a: str, b: str) -> bool:
    """`engine` and `engine.model` set the same value; `engine.model` and `engine.dtype` do not."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_not_given(overrides: Sequence[str], key: str, flag: str, value: Any) -> None:
    for item in overrides:
        if _overlaps(override_key(item), key):
            raise RecipeError(f"{key}: given twice, as {flag} {value} and as the override {item!r}; pass only one")


def overrides(args: argparse.Namespace) -> list[str]:
    """The command's `key=value` overrides followed by those its key flags spell (values JSON-quoted, so a flag's
    string stays a string); a key given both ways is a RecipeError naming it."""
    out = list(getattr(args, "overrides", None) or [])
    given = list(out)
    for spec in getattr(args, "key_flags", ()):
        value = getattr(args, spec.dest)
        if value is None:
            continue
        for key, v in {spec.key: value, **spec.also}.items():
            check_not_given(given, key, spec.flag, value)
            out.append(f"{key}={json.dumps(v)}")
    return out


def log_folder(output_dir: str) -> Path:
    """Where a command's library log goes: beside its outputs, or in the node's cache when they go to object
    storage (a log file grows line by line; an object cannot)."""
    from cluster import storage
    from cluster.locations import cache_dir

    output_dir = storage.located(output_dir)
    return cache_dir() / "logs" if storage.is_uri(output_dir) else Path(output_dir).expanduser() / "logs"


@contextmanager
def library_log(args: argparse.Namespace, folder: Path, name: str) -> Iterator[LibraryLog | None]:
    """Ray, DeepSpeed, torch, vLLM and transformers output to `<folder>/<name>-<time>.log` for the duration of a
    command, unless `--verbose`; the console says where it went."""
    if getattr(args, "verbose", False):
        yield None
        return
    path = Path(folder).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    console.print(f"[dim]library output (Ray, DeepSpeed, torch, vLLM, warnings): {path}  (--verbose shows it)[/dim]",
                  soft_wrap=True)
    with library_output_to(path) as log:
        try:
            yield log
        except BaseException:
            if log is not None and log.path.exists():
                console.print(f"[dim]library output of this run: {log.path}[/dim]", soft_wrap=True)
            raise
