"""A run's folder: per-direction generations (with prompt and model identity), hypotheses, scores.

```
<output_dir>/<run id>/
  recipe.resolved.yaml   run.json   scores.json   report.md   report.html
  generations/<system>/<src>-<tgt>.jsonl      one row per segment: id, source, references, prompt,
                                              raw output, hypothesis, sentence scores
  generations/<system>/<src>-<tgt>.meta.json  direction, model identity, prompt template, sampling
  hyps/<system>/<src>-<tgt>.txt               hypotheses, one per line (re-scorable with --hyp-dir)
```

An output folder in object storage (`s3://bucket/prefix`) gets the same layout: nodes share no disk, so the run
is written to a node-local staging folder in xalign's cache, uploaded whole (`checksums.json` last, so a reader
never takes a half-written report for a finished one) and the staging copy removed. Reading a run from storage
goes through a verified local copy (`cluster.storage.fetch_dir`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.locations import REPO_ROOT, cache_dir


class RunNotFoundError(FileNotFoundError):
    pass


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "model"


def staging_dir(uri: str) -> Path:
    """The node-local folder a report bound for `uri` is written to before its upload. It depends on the URI
    alone, so a resumed run on the same node finds the checkpoints an interrupted one left there."""
    uri = uri.rstrip("/")
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return cache_dir() / "staging" / "reports" / key / uri.rsplit("/", 1)[-1]


def local_folder(location: str | Path) -> Path:
    """Where files bound for `location` are written on this node: the folder itself, or its staging folder."""
    return staging_dir(str(location)) if storage.is_uri(location) else Path(location)


def publish(local: Path, uri: str) -> str:
    """Upload a staged folder to `uri` and remove the staging copy (and its emptied parents); returns `uri`."""
    storage.upload_dir(local, uri)
    shutil.rmtree(local)
    top = cache_dir() / "staging"
    for parent in local.parents:
        if not parent.is_relative_to(top):
            break
        try:
            parent.rmdir()  # only when empty: another run may be staging beside it
        except OSError:
            break
    return uri


def location_file(location: str | Path, name: str) -> Path | str:
    """A file of a report folder, for printing: a path, or a URI when the folder is in storage."""
    return storage.join(str(location), name) if storage.is_uri(location) else Path(location) / name


@dataclass
class RunDir:
    """A run's files at `root` on this node; `uri`: where the run lives in object storage, if it does (then `root`
    is the staging folder while the run is written, or a fetched copy when an earlier run is read)."""

    root: Path
    uri: str | None = None

    @classmethod
    def at(cls, output_dir: str | Path, run_id: str) -> RunDir:
        """The run `run_id` under an output folder, local or in storage (`XALIGN_ARTIFACTS` places a relative one)."""
        output_dir = storage.located(output_dir)
        if storage.is_uri(output_dir):
            uri = storage.join(str(output_dir), run_id)
            return cls(staging_dir(uri), uri)
        return cls(Path(output_dir) / run_id)

    @property
    def run_id(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1] if self.uri else self.root.name

    @property
    def location(self) -> Path | str:
        """What to show and hand on: the URI of a run in storage, else its folder."""
        return self.uri or self.root

    def file(self, name: str) -> Path | str:
        return location_file(self.location, name)

    def publish(self) -> None:
        """Upload a staged run to its URI and drop the local copy (nothing to do for a local run)."""
        if self.uri:
            publish(self.root, self.uri)

    def read_text(self, path: Path) -> str:
        """A file of the run (a path under `root`): from this node, or from storage once the staging copy of a
        published run is gone."""
        if self.uri is None or path.is_file():
            return path.read_text(encoding="utf-8")
        try:
            return storage.read_text(storage.join(self.uri, path.relative_to(self.root).as_posix()))
        except storage.StorageError as exc:
            raise RunNotFoundError(str(exc)) from None

    def generations(self, system: str, key: str) -> Path:
        return self.root / "generations" / safe_name(system) / f"{key}.jsonl"

    def meta(self, system: str, key: str) -> Path:
        return self.root / "generations" / safe_name(system) / f"{key}.meta.json"

    def hyps(self, system: str, key: str) -> Path:
        return self.root / "hyps" / safe_name(system) / f"{key}.txt"

    @property
    def scores(self) -> Path:
        return self.root / "scores.json"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_direction(run: RunDir, system: str, key: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    gen = run.generations(system, key)
    gen.parent.mkdir(parents=True, exist_ok=True)
    with gen.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(run.meta(system, key), meta)
    hyp = run.hyps(system, key)
    hyp.parent.mkdir(parents=True, exist_ok=True)
    hyp.write_text("".join(r["hypothesis"] + "\n" for r in rows), encoding="utf-8")


def find_run(spec: str | Path, output_dir: str | Path = "outputs/reports") -> RunDir:
    """A run by folder path or URI, or by id under the output folder (cwd-relative, then repo-relative, or in
    storage). A run in storage is read from a verified node-local copy."""
    uris = [str(spec)] if storage.is_uri(spec) else []
    if storage.is_uri(output_dir) and not (Path(spec) / "scores.json").is_file():
        uris.append(storage.join(str(output_dir), str(spec)))
    if uris:
        try:
            return RunDir(storage.fetch_dir(uris[0]), uris[0])
        except storage.StorageError as exc:
            raise RunNotFoundError(f"run {spec!r} not found: {exc}") from None
    candidates = [Path(spec), Path(output_dir) / str(spec), REPO_ROOT / output_dir / str(spec)]
    for c in candidates:
        if (c / "scores.json").is_file():
            return RunDir(c.resolve())
    raise RunNotFoundError(f"run {spec!r} not found (looked for scores.json in {', '.join(map(str, candidates))})")


def read_scores(run: RunDir) -> dict[str, Any]:
    return json.loads(run.read_text(run.scores))


def read_generations(run: RunDir, system: str, key: str) -> list[dict[str, Any]]:
    path = run.generations(system, key)
    try:
        text = run.read_text(path)
    except FileNotFoundError:
        raise RunNotFoundError(f"{run.file(path.relative_to(run.root).as_posix())}: generations missing for "
                               f"{system} {key}") from None
    return [json.loads(line) for line in text.split("\n") if line.strip()]
