"""The dataset manifest: what went in, what came out, and the hash of it all (the dataset id).

`dataset_id` is the sha256 of the manifest's canonical JSON without the id itself. The manifest holds no
timings, hosts or absolute output paths, so the same inputs and recipe give the same id anywhere; run
details go to `run.json` beside it. Training records the id for lineage and can `verify` the shards.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

FORMAT = "xalign.dataset/1"
_SOFTWARE = ("pyarrow", "transformers", "tokenizers", "datasketch", "py3langid", "pycld2")


def software() -> dict[str, str]:
    """Versions of the libraries the bytes depend on (writer, tokenizer, dedup, language ID)."""
    out = {}
    for name in _SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def dataset_id(manifest: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in manifest.items() if k != "dataset_id"})).hexdigest()


def with_id(manifest: dict) -> dict:
    return {"dataset_id": dataset_id(manifest), **manifest}


def write(manifest: dict, folder: Path) -> Path:
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load(folder: str | Path) -> dict:
    """The manifest of a local dataset folder, or of one in object storage (`s3://…`)."""
    from cluster import storage

    if storage.is_uri(folder):
        return json.loads(storage.read_text(storage.join(str(folder), "manifest.json")))
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))


class DatasetIntegrityError(ValueError):
    pass


def verify(folder: str | Path) -> dict:
    """Check the id and every listed file's sha256; returns the manifest."""
    folder = Path(folder)
    m = load(folder)
    if dataset_id(m) != m.get("dataset_id"):
        raise DatasetIntegrityError(f"{folder}/manifest.json: dataset_id does not match the manifest content")
    listed = [e for split in ("sft", "dpo", "rl") for e in m["shards"].get(split, [])]  # rl: only where built
    for entry in [*listed, *m["rejects"]]:
        f = folder / entry["file"]
        if not f.is_file():
            raise DatasetIntegrityError(f"{f}: listed in the manifest but missing")
        if hashlib.sha256(f.read_bytes()).hexdigest() != entry["sha256"]:
            raise DatasetIntegrityError(f"{f}: sha256 differs from the manifest")
    return m
