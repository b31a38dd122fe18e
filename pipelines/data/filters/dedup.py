"""Exact and near-duplicate removal per language within each builder: SHA-1 of normalized text and MinHash LSH.

Builders derive examples from the same sentences on purpose (a translation pair, a conversation and a
preference pair may share a reference), so duplicates are looked for inside one builder's output.

Signatures are computed per record in the parallel stage; `dedup_group` sees one group at a time and keeps
the first record of every duplicate cluster in sample-id order, so the result does not depend on the
order in which Ray delivers the rows.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pyarrow as pa

from pipelines.data.recipe import DedupFilter
from pipelines.data.schema import is_kept, on_columns, reject

SCHEME = "affine32"  # datasketch's 32-bit scheme: signatures fit the uint32 column


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def shingles(text: str, k: int) -> list[bytes]:
    return [text[i : i + k].encode() for i in range(max(1, len(text) - k + 1))]


def group_key(row: dict) -> str:
    return f"{row['builder']}:{row['lang']}"


def add_signatures(rows: list[dict], cfg: DedupFilter) -> None:
    todo = [r for r in rows if is_kept(r)]
    norm = [normalize(r["dedup_text"] or "") for r in todo]
    for row, text in zip(todo, norm):
        row["exact_hash"] = hashlib.sha1(text.encode()).hexdigest()
    if cfg.near and todo:
        # Imported here: datasketch pulls in scipy (~0.5 s), paid by every Ray worker that imports this module.
        from datasketch import MinHash

        # crc32 as the shingle hash: deterministic and ~3x faster than datasketch's default SHA-1.
        sigs = MinHash.bulk([shingles(t, cfg.shingle) for t in norm], num_perm=cfg.num_perm, hashfunc=zlib.crc32,
                            scheme=SCHEME)
        for row, sig in zip(todo, sigs):
            row["minhash"] = sig.hashvalues.tolist()


def dedup_group(rows: list[dict], cfg: DedupFilter) -> list[dict]:
    """Mark duplicates inside one (builder, language) group."""
    rows.sort(key=lambda r: r["sample_id"])
    seen: dict[str, str] = {}
    lsh = None
    if cfg.near:
        from datasketch import LeanMinHash, MinHashLSH

        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    for row in rows:
        if not is_kept(row):
            continue
        if cfg.exact:
            first = seen.setdefault(row["exact_hash"], row["sample_id"])
            if first != row["sample_id"]:
                reject(row, "exact_duplicate", "dedup", f"same text as {first}")
                continue
        if lsh is not None and row["minhash"] is not None:
            sig = LeanMinHash(seed=1, hashvalues=np.asarray(row["minhash"], dtype=np.uint32), scheme=SCHEME)
            near = lsh.query(sig)
            if near:
                reject(row, "near_duplicate", "dedup", f"near {min(near)} (Jaccard >= {cfg.threshold})")
                continue
            lsh.insert(row["sample_id"], sig)
    return rows


def dedup_table(group: pa.Table, cfg: DedupFilter) -> pa.Table:
    """`dedup_group` on an Arrow group; the signatures are dropped after it (nothing later reads them)."""
    reads = ["sample_id", "exact_hash", "reject_reason", "reject_stage", "reject_detail"]
    if cfg.near:
        reads.append("minhash")

    def run(rows: list[dict]) -> None:
        dedup_group(rows, cfg)
        for r in rows:
            r["minhash"] = None

    return on_columns(group.sort_by("sample_id"), reads, ["reject_reason", "reject_stage", "reject_detail",
                                                          "minhash"], run)
