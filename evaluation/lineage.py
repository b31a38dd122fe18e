"""Model identity for every score row: which weights, and (for `xalign train` exports) which data.

An export from `xalign train` carries `lineage.json` inside the model folder or beside it, with
`dataset_id` (the dataset manifest hash), `run_id`, `step` and `base_model`; a score row then names
the manifest its model was trained on. Every model folder also gets a content fingerprint, so two
rows with the same name but different weights never look alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cluster.locations import REPO_ROOT

LINEAGE_FILE = "lineage.json"
LINEAGE_KEYS = ("dataset_id", "run_id", "step", "base_model")
# Files whose bytes decide what the model generates.
_FINGERPRINTED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "adapter_config.json")
_WEIGHTS = ("*.safetensors", "*.bin")


class LineageError(ValueError):
    pass


def display_path(path: Path) -> str:
    """Repo-relative when inside the checkout or beside it (`../shared/data/...`), so reports travel."""
    path = path.resolve()
    if path.is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(path, REPO_ROOT)
    return str(path)


def fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    files = [model_dir / n for n in _FINGERPRINTED if (model_dir / n).is_file()]
    files += sorted(p for pattern in _WEIGHTS for p in model_dir.glob(pattern))
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def find_lineage(model_dir: Path) -> Path | None:
    for cand in (model_dir / LINEAGE_FILE, model_dir.parent / LINEAGE_FILE):
        if cand.is_file():
            return cand
    return None


def read_lineage(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LineageError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise LineageError(f"{path}: expected a JSON object")
    missing = [k for k in LINEAGE_KEYS if k not in data]
    if missing:
        raise LineageError(f"{path}: missing key(s) {', '.join(missing)} (an xalign train export has {LINEAGE_KEYS})")
    return data


def model_name(model_dir: Path) -> str:
    """`<train run>-step<N>` for an `xalign train` export, else the name xalign gave the folder, else its name."""
    lineage_file = find_lineage(model_dir)
    if lineage_file:
        lin = read_lineage(lineage_file)
        return f"{lin['run_id']}-step{lin['step']}"
    marker = model_dir / "xalign_model.json"
    if marker.is_file():
        try:
            name = json.loads(marker.read_text()).get("name")
        except json.JSONDecodeError:
            name = None
        if name:
            return str(name)
    return model_dir.name


def identify(model_dir: Path, spec: str | None = None) -> dict[str, Any]:
    """The identity recorded with every score row of a model."""
    model_dir = Path(model_dir)
    ident: dict[str, Any] = {
        "kind": "model", "name": model_name(model_dir), "spec": spec or display_path(model_dir),
        "path": display_path(model_dir), "fingerprint": fingerprint(model_dir),
        "lineage": None, "dataset_manifest_hash": None,
    }
    lineage_file = find_lineage(model_dir)
    if lineage_file:
        lin = read_lineage(lineage_file)
        ident.update(lineage={**lin, "file": display_path(lineage_file)}, dataset_manifest_hash=lin["dataset_id"])
    return ident


def hypothesis_identity(system: str, path: Path) -> dict[str, Any]:
    """Scored hypothesis files: the system name and where the outputs came from."""
    return {"kind": "hypotheses", "name": system, "spec": system, "path": display_path(path), "fingerprint": None,
            "lineage": None, "dataset_manifest_hash": None}
