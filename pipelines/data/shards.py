"""Shard and rejects writers: each call writes one Parquet file from one group and returns its statistics.

Files are written from the group's rows sorted by a seeded key, with fixed writer settings, so the same
inputs and recipe give byte-identical files however Ray scheduled the work. Only the small statistics
dicts travel back to the driver.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster import storage
from pipelines.data import seeding
from pipelines.data.packing import pack_rows
from pipelines.data.schema import DPO_SCHEMA, REJECT_SCHEMA, RL_SCHEMA, SFT_SCHEMA, to_table

ROW_GROUP_SIZE = 1024


def _dest(out_dir: Path | str, name: str) -> Path | str:
    """Where a shard goes: a file in a local folder, or an object under a storage URI (`s3://…`)."""
    return storage.join(str(out_dir), name) if storage.is_uri(out_dir) else Path(out_dir) / name


def write_parquet(table: pa.Table, path: Path | str) -> str:
    """Write with fixed settings; returns the file's sha256. An object-storage PUT replaces the object whole, so
    a retried task is as atomic there as the local rename."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=ROW_GROUP_SIZE)
    data = sink.getvalue().to_pybytes()
    if isinstance(path, str):
        storage.write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # a retried task rewrites the same bytes atomically
    return hashlib.sha256(data).hexdigest()


def _length_bucket(n: int) -> str:
    """Power-of-two buckets: '<=64', '<=128', ..."""
    b = 16
    while b < n:
        b *= 2
    return f"<={b}"


def write_sft_shard(samples: list[dict], out_dir: Path | str, shard: int, max_seq_len: int) -> dict:
    samples = sorted(samples, key=lambda s: (s["order_key"], s["sample_id"]))
    rows = pack_rows(samples, max_seq_len)
    name = f"sft/part-{shard:05d}.parquet"
    sha = write_parquet(to_table(rows, SFT_SCHEMA), _dest(out_dir, name))
    lengths = [len(s["input_ids"]) for s in samples]
    return {
        "kind": "sft", "shard": shard, "file": name, "sha256": sha, "rows": len(rows), "samples": len(samples),
        "real_tokens": int(sum(lengths)),
        "trainable_tokens": int(sum(int((np.asarray(s["labels"]) != -100).sum()) for s in samples)),
        "slots": len(rows) * max_seq_len,
        "max_sample_tokens": max(lengths),
        "by_lang": dict(Counter(s["lang"] for s in samples)),
        "by_builder": dict(Counter(s["builder"] for s in samples)),
        "length_hist": dict(Counter(_length_bucket(n) for n in lengths)),
    }


def dpo_placement(sample_id: str, seed: int, num_shards: int) -> tuple[int, int]:
    """(order key, shard) of an unpacked row (preference pair, RL prompt): a seeded shuffle by id."""
    key = seeding.key64(seed, "order", sample_id)
    return key >> 1, key % num_shards


def write_dpo_shard(pairs: list[dict], out_dir: Path | str, shard: int) -> dict:
    pairs = sorted(pairs, key=lambda p: (p["order_key"], p["sample_id"]))
    rows = [{
        "sample_id": p["sample_id"], "lang": p["lang"], "reason": p["pref_reason"], "prompt_ids": p["prompt_ids"],
        "chosen_ids": p["chosen_ids"], "rejected_ids": p["rejected_ids"], "builder": p["builder"],
        "src_lang": p["src_lang"], "rejected_lang": p["rejected_lang"], "detail": p["detail"],
    } for p in pairs]
    name = f"dpo/part-{shard:05d}.parquet"
    sha = write_parquet(to_table(rows, DPO_SCHEMA), _dest(out_dir, name))
    return {
        "kind": "dpo", "shard": shard, "file": name, "sha256": sha, "rows": len(rows), "samples": len(rows),
        "real_tokens": int(sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)),
        "by_lang": dict(Counter(p["lang"] for p in pairs)),
        "by_reason": dict(Counter(p["pref_reason"] for p in pairs)),
    }


def write_rl_shard(prompts: list[dict], out_dir: Path | str, shard: int) -> dict:
    prompts = sorted(prompts, key=lambda p: (p["order_key"], p["sample_id"]))
    rows = [{
        "sample_id": p["sample_id"], "prompt_ids": p["prompt_ids"], "reference": p["reference"],
        "source_text": p["source_text"], "src_lang": p["src_lang"], "tgt_lang": p["lang"],
        "num_tokens": p["num_tokens"], "reference_tokens": p["reference_tokens"],
    } for p in prompts]
    name = f"rl/part-{shard:05d}.parquet"
    sha = write_parquet(to_table(rows, RL_SCHEMA), _dest(out_dir, name))
    return {
        "kind": "rl", "shard": shard, "file": name, "sha256": sha, "rows": len(rows), "samples": len(rows),
        "real_tokens": int(sum(p["num_tokens"] for p in prompts)),
        "max_prompt_tokens": max(p["num_tokens"] for p in prompts),
        "reference_tokens": int(sum(p["reference_tokens"] for p in prompts)),
        "by_direction": dict(Counter(f"{p['src_lang']}>{p['lang']}" for p in prompts)),
    }


def reject_file_name(reason: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in reason)
    return f"rejects/{safe}.parquet"


def write_rejects(rows: list[dict], out_dir: Path | str) -> dict:
    """All rejected records of one reason, with where they came from and the record as built."""
    rows = sorted(rows, key=lambda r: r["sample_id"])
    reason = rows[0]["reject_reason"]
    def record(r: dict) -> str:
        built = {"kind": r["kind"], "src_lang": r["src_lang"], "messages": json.loads(r["messages"] or "null"),
                 "chosen": r["chosen"], "rejected": r["rejected"], "pref_reason": r["pref_reason"],
                 "detail": r["detail"]}
        if r["kind"] == "rl":
            built["reference"] = r["reference"]
        return json.dumps(built, ensure_ascii=False)

    table = to_table(({
        "sample_id": r["sample_id"], "reason": r["reject_reason"], "stage": r["reject_stage"],
        "detail": r["reject_detail"], "builder": r["builder"], "source": r["source"],
        "source_file": r["source_file"], "source_index": r["source_index"], "lang": r["lang"],
        "record": record(r),
    } for r in rows), REJECT_SCHEMA)
    name = reject_file_name(reason)
    sha = write_parquet(table, _dest(out_dir, name))
    return {"kind": "rejects", "reason": reason, "file": name, "sha256": sha, "rows": len(rows)}
