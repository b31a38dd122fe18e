"""The training input: a dataset folder written by `xalign prepare`, checked in the driver from Parquet
metadata only and streamed to the workers as a Ray Data dataset (never loaded whole in the driver).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster import storage

# Column kinds, not exact Arrow types: a writer may use large_list or another integer width.
COLUMNS: dict[str, dict[str, str]] = {
    "sft": {
        "input_ids": "ints", "labels": "ints", "position_ids": "ints", "sample_ids": "strings", "num_tokens": "int",
    },
    "dpo": {
        "sample_id": "string", "lang": "string", "reason": "string", "prompt_ids": "ints", "chosen_ids": "ints",
        "rejected_ids": "ints",
    },
    # RL prompts (GRPO): generation prompts as `cluster.prompts.encode_prompt` made them, with the reference.
    "rl": {
        "sample_id": "string", "prompt_ids": "ints", "reference": "string", "source_text": "string",
        "src_lang": "string", "tgt_lang": "string", "num_tokens": "int", "reference_tokens": "int",
    },
}


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_kind(t: pa.DataType, kind: str) -> bool:
    if kind == "int":
        return pa.types.is_integer(t)
    if kind == "string":
        return _is_str(t)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    return pa.types.is_integer(t.value_type) if kind == "ints" else _is_str(t.value_type)


class DatasetError(ValueError):
    """A dataset folder that does not follow `xalign prepare`'s contract; names the file and column."""


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    split: str  # "sft", "dpo" or "rl"
    dataset_id: str
    files: tuple[str, ...]
    num_rows: int
    max_seq_len: int | None  # from the manifest, when it says
    manifest: dict[str, Any]
    source: str | None = None  # the storage URI `path` was fetched from (`s3://…`), read there by every node

    @property
    def location(self) -> str:
        return self.source or str(self.path)

    def read_paths(self) -> list[str]:
        """Where Ray Data reads the shards: in object storage for a fetched dataset, since the read tasks run on
        nodes that do not have the driver's copy."""
        if self.source is None:
            return list(self.files)
        return [storage.join(self.source, Path(f).relative_to(self.path).as_posix()) for f in self.files]


def _manifest_max_seq_len(manifest: dict[str, Any]) -> int | None:
    """`max_seq_len` at the top level or in one nested section (prepare's recipe may keep it under pack:)."""
    if isinstance(manifest.get("max_seq_len"), int):
        return manifest["max_seq_len"]
    for value in manifest.values():
        if isinstance(value, dict) and isinstance(value.get("max_seq_len"), int):
            return value["max_seq_len"]
    return None


def _check_schema(file: Path, split: str) -> None:
    schema = pq.read_schema(file)
    for name, kind in COLUMNS[split].items():
        idx = schema.get_field_index(name)
        if idx < 0:
            need = ", ".join(COLUMNS[split])
            raise DatasetError(f"{file}: column {name!r} is missing (a {split} shard needs {need})")
        got = schema.field(idx).type
        if not _is_kind(got, kind):
            want = {"ints": "list<int32>", "strings": "list<string>", "int": "int32", "string": "string"}[kind]
            raise DatasetError(f"{file}: column {name!r} has type {got}, expected {want}")


def _shard_files(root: Path, manifest: dict[str, Any], split: str) -> list[tuple[Path, int | None]]:
    """The split's shards with their row counts: the manifest's list when it has one (a shard deleted or added
    after `xalign prepare` is an error naming the file, never a silently smaller dataset), else the folder's."""
    listed = (manifest.get("shards") or {}).get(split) if isinstance(manifest.get("shards"), dict) else None
    on_disk = sorted((root / split).glob("part-*.parquet"))
    if listed is None:
        if not on_disk:
            raise DatasetError(f"{root / split}: no part-*.parquet shards (method needs the {split!r} split)")
        return [(f, None) for f in on_disk]
    if not listed:
        raise DatasetError(f"{root / 'manifest.json'}: shards.{split} is empty (the method needs the {split!r} split; "
                           "prepare a dataset that has it)")
    if not isinstance(listed, list):
        raise DatasetError(f"{root / 'manifest.json'}: shards.{split}: expected a list of shard entries")
    files = []
    for i, entry in enumerate(listed):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise DatasetError(f"{root / 'manifest.json'}: shards.{split}[{i}].file: required (a path in the folder)")
        f = root / entry["file"]
        if not f.is_file():
            raise DatasetError(f"{f}: shard listed in manifest.json (shards.{split}[{i}]) is missing; the dataset "
                               "folder changed after `xalign prepare` (re-run prepare or restore the file)")
        files.append((f, entry.get("rows")))
    extra = sorted(set(on_disk) - {f for f, _ in files})
    if extra:
        raise DatasetError(f"{extra[0]}: shard not listed in manifest.json (shards.{split}); the dataset folder "
                           "changed after `xalign prepare`")
    return files


def open_dataset(path: str | Path, split: str) -> DatasetInfo:
    """Validate a dataset folder for `split` from its manifest and Parquet footers (no row data read). A dataset
    in object storage is first fetched to a node-local copy verified against its `checksums.json`."""
    if storage.is_uri(path):
        try:
            local = storage.fetch_dir(str(path))
        except storage.StorageError as exc:
            raise DatasetError(f"data.path: {exc}") from None
        return dataclasses.replace(open_dataset(local, split), source=str(path).rstrip("/"))
    root = Path(path).expanduser().resolve()
    manifest_file = root / "manifest.json"
    if not manifest_file.is_file():
        raise DatasetError(f"data.path: {root} has no manifest.json (is it a folder written by `xalign prepare`?)")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{manifest_file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    dataset_id = manifest.get("dataset_id")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise DatasetError(f"{manifest_file}: dataset_id: required (a non-empty string)")
    files = _shard_files(root, manifest, split)
    num_rows = 0
    for f, want_rows in files:
        try:
            _check_schema(f, split)
            rows = pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"{f}: not a readable Parquet shard: {exc}") from None
        if want_rows is not None and rows != want_rows:
            raise DatasetError(f"{f}: {rows} rows, the manifest says {want_rows} (the shard changed after prepare)")
        num_rows += rows
    files = [f for f, _ in files]
    return DatasetInfo(
        path=root, split=split, dataset_id=dataset_id, files=tuple(str(f) for f in files), num_rows=num_rows,
        max_seq_len=_manifest_max_seq_len(manifest), manifest=manifest,
    )


def open_rl_dataset(path: str | Path) -> DatasetInfo:
    """The `rl` split (RL prompts with references) of a prepared dataset, checked like `open_dataset` checks
    sft/dpo: the manifest's `shards.rl` entries, every listed shard present with its row count, and the
    columns of `COLUMNS["rl"]`. A dataset prepared without an `rl` builder fails naming the missing split."""
    return open_dataset(path, "rl")


def check_tokenizer(info: DatasetInfo, model_dir: Path) -> None:
    """Token ids mean something only for the tokenizer that produced them."""
    recorded = info.manifest.get("tokenizer")
    if not isinstance(recorded, dict) or "tokenizer_sha256" not in recorded:
        return  # a manifest without tokenizer identity: nothing to compare
    from cluster.tokenizer import tokenizer_identity

    ours = tokenizer_identity(model_dir)
    # Same token ids is what matters; manifests written before that digest existed compare the files' hash.
    key = "token_ids_sha256" if "token_ids_sha256" in recorded else "tokenizer_sha256"
    if ours[key] != recorded[key]:
        raise DatasetError(
            f"{info.path}/manifest.json: tokenizer: the dataset was tokenized with {recorded.get('name')!r} "
            f"(vocab {recorded.get('vocab_size')}), but model.base {model_dir} has {ours['name']!r} "
            f"(vocab {ours['vocab_size']}); prepare the data with this model's tokenizer"
        )


def verify_checksums(info: DatasetInfo) -> None:
    from cluster.manifest import DatasetIntegrityError, verify

    try:
        verify(info.path)
    except DatasetIntegrityError as exc:
        raise DatasetError(str(exc)) from None


def read_split(info: DatasetInfo, read_blocks: int):
    """The split as a lazy Ray Data dataset, read with a fixed number of blocks (see DataSection)."""
    import ray.data

    ds = ray.data.read_parquet(info.read_paths(), override_num_blocks=read_blocks)
    return ds.select_columns(list(COLUMNS[info.split]))

