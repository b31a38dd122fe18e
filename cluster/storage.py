"""Artifacts in object storage: datasets, checkpoints, exports and reports under `s3://…` (or any pyarrow URI).

On a multi-node Ray cluster the nodes share no disk, so an artifact a later stage needs lives in object
storage and each node reads it from there. The S3 endpoint, region and credentials come from the standard
AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), which
pyarrow, boto3 and the Helm chart's pods all read.

A folder in storage is complete when its `checksums.json` exists: `upload_dir` writes it last, `fetch_dir`
refuses a folder without it and checks every file against it. vLLM and Transformers read local files, so
`fetch_dir` gives a node-local copy in xalign's cache, reused while the checksums are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from cluster.locations import cache_dir

CHECKSUMS = "checksums.json"
ARTIFACTS_ENV = "XALIGN_ARTIFACTS"  # e.g. s3://bucket/xalign: the Helm chart sets it when storage.kind=s3
_CHUNK = 1 << 20


class StorageError(OSError):
    """An artifact in storage is missing, incomplete or differs from its checksums."""


def is_uri(path: str | Path) -> bool:
    """`s3://bucket/key` and other remote URIs; plain paths and `file://` stay local."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a URI, endpoint and credentials from the environment."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pafs.ArrowInvalid, OSError, ValueError) as exc:  # type: ignore[attr-defined]
        raise StorageError(f"{uri}: not a storage location xalign can open: {exc}") from None


def located(path: str | Path) -> str:
    """Where a relative artifact location (`outputs/datasets`, a recipe's default) lives: under `XALIGN_ARTIFACTS`
    when that is set, so pods without a shared disk keep everything in object storage; else where it says.
    Absolute paths and URIs are taken as they are."""
    root, text = os.environ.get(ARTIFACTS_ENV), str(path)
    if not root or is_uri(text) or text.startswith("file://") or Path(text).expanduser().is_absolute():
        return text
    return join(root, text.removeprefix("./"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def local_checksums(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` by relative POSIX path (the checksums file itself and the top-level
    entries named in `skip` excluded)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS and p.relative_to(folder).parts[0] not in skip}


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as src:
            return src.read()
    except FileNotFoundError:
        raise StorageError(f"{uri}: not found") from None


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def upload_dir(local: Path, uri: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Copy `local` (less its top-level entries named in `skip`) to `uri`, then write its `checksums.json` (so a
    reader never sees a half-uploaded folder as complete). Returns the checksums."""
    sums = local_checksums(local, skip)
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(path, missing_dir_ok=True)  # a rebuilt artifact replaces the old one whole
    for name in sums:
        if fs.type_name == "local":  # object stores have no folders to make
            fs.create_dir(f"{path}/{name}".rsplit("/", 1)[0], recursive=True)
        with (local / name).open("rb") as src, fs.open_output_stream(f"{path}/{name}") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    write_text(join(uri, CHECKSUMS), json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


def publish_dir(local: Path, uri: str) -> None:
    """`upload_dir`, plus a `checksums.json` in every immediate subfolder, so that each one (an export's
    `model/` or `adapter/`) can be fetched on its own."""
    upload_dir(local, uri)
    for sub in sorted(p for p in local.iterdir() if p.is_dir()):
        sums = local_checksums(sub)
        write_text(join(uri, sub.name, CHECKSUMS), json.dumps(sums, indent=2, sort_keys=True) + "\n")


def remote_checksums(uri: str) -> dict[str, str]:
    try:
        return json.loads(read_text(join(uri, CHECKSUMS)))
    except StorageError:
        raise StorageError(f"{uri}: no {CHECKSUMS}, so the folder is missing or its upload never finished") from None


def _verify(folder: Path, sums: dict[str, str], source: str) -> None:
    for name, digest in sums.items():
        f = folder / name
        if not f.is_file():
            raise StorageError(f"{source}/{name}: listed in {CHECKSUMS} but missing")
        if sha256_file(f) != digest:
            raise StorageError(f"{source}/{name}: sha256 differs from {CHECKSUMS}")


def fetch_dir(uri: str, cache: Path | None = None) -> Path:
    """A node-local, verified copy of the folder at `uri` (a plain path is returned as it is). The copy is keyed
    by the URI and its checksums, so a replaced artifact is fetched again and an unchanged one is not."""
    if not is_uri(uri):
        return Path(uri.removeprefix("file://"))
    sums = remote_checksums(uri)
    key = hashlib.sha256(json.dumps([uri, sums], sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache or cache_dir() / "artifacts")
    dest = root / f"{uri.rstrip('/').rsplit('/', 1)[-1]}-{key}"
    if (dest / CHECKSUMS).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        fs, path = filesystem(uri)
        pafs.copy_files(path, str(staging), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem(),
                        use_threads=True)
        _verify(staging, sums, uri)
        if dest.exists():  # another process fetched it meanwhile
            shutil.rmtree(staging)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
