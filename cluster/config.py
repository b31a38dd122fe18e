"""The one configuration layer: validated YAML recipes plus torchtune-style `key.sub=value` overrides.

Each command owns a pydantic model for its recipe; this module loads YAML, applies overrides,
validates (unknown keys and wrong types are errors naming the key) and saves the resolved recipe
beside every output it produces.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cluster.locations import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"

class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


class RecipeError(ValueError):
    """A recipe that cannot be loaded; the message names the file and the offending key."""


def find_recipe(name_or_path: str | Path) -> Path:
    """`recipes/x.yaml`, a path, or a bare name (`bayling2-mini`) looked up under recipes/."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (RECIPES_DIR / p, RECIPES_DIR / f"{p}.yaml", REPO_ROOT / p):
        if cand.is_file():
            return cand
    available = sorted(x.stem for x in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []
    raise RecipeError(f"recipe not found: {name_or_path} (available: {', '.join(available) or 'none'})")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (['a', 'b'], 3). The value is parsed as YAML so lists, numbers and null work."""
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"override {item!r}: value is not valid YAML: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"override {item!r}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}" + ("" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"))
    return "\n".join(lines)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level")
    return data


def validate(model: type[M], data: dict[str, Any], source: str = "<recipe>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None


def load_recipe(model: type[M], recipe: str | Path | None, overrides: list[str] | None = None) -> M:
    """Load, override and validate a recipe. `recipe=None` starts from the model's defaults."""
    path = find_recipe(recipe) if recipe is not None else None
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return validate(model, data, str(path) if path else "<defaults>")


def json_hash(obj: Any) -> str:
    """A short stable hash of JSON-able data (key order ignored): recipe and lineage keys."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def recipe_hash(recipe: BaseModel) -> str:
    return json_hash(recipe.model_dump(mode="json"))


def save_resolved(recipe: BaseModel, out_dir: Path, name: str = "recipe.resolved.yaml") -> Path:
    """Write the resolved recipe beside an output so every artifact says how it was made."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    return path
