"""Artifacts in object storage against a real S3 HTTP server (moto's standalone server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster import storage


def make_folder(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    (root / "lineage.json").write_text(json.dumps({"step": 3}))
    return root


def test_uri_or_path():
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k")
    assert not storage.is_uri("outputs/runs") and not storage.is_uri("file:///tmp/x")
    assert storage.join("s3://b/a/", "/c", "d/") == "s3://b/a/c/d"


def test_upload_then_fetch_is_verified_and_cached(s3, tmp_path: Path):
    _, bucket = s3
    src = make_folder(tmp_path / "export")
    sums = storage.upload_dir(src, f"{bucket}/runs/r1/export")
    assert set(sums) == {"model/weights.bin", "lineage.json"}
    assert storage.exists(f"{bucket}/runs/r1/export/checksums.json")

    cache = tmp_path / "cache"
    local = storage.fetch_dir(f"{bucket}/runs/r1/export", cache=cache)
    assert (local / "model" / "weights.bin").read_bytes() == (src / "model" / "weights.bin").read_bytes()
    assert storage.fetch_dir(f"{bucket}/runs/r1/export", cache=cache) == local  # unchanged: not fetched again

    (src / "lineage.json").write_text(json.dumps({"step": 4}))  # replaced in storage: a new local copy
    storage.upload_dir(src, f"{bucket}/runs/r1/export")
    again = storage.fetch_dir(f"{bucket}/runs/r1/export", cache=cache)
    assert again != local and json.loads((again / "lineage.json").read_text()) == {"step": 4}


def test_a_folder_whose_upload_never_finished_is_refused(s3, tmp_path: Path):
    _, bucket = s3
    storage.write_text(f"{bucket}/half/model/config.json", "{}")  # files, but no checksums.json
    cache = tmp_path / "cache"
    with pytest.raises(storage.StorageError, match=r"half: no checksums.json"):
        storage.fetch_dir(f"{bucket}/half", cache=cache)
    assert not cache.exists()


def test_a_changed_file_is_refused_and_nothing_is_kept(s3, tmp_path: Path):
    _, bucket = s3
    storage.upload_dir(make_folder(tmp_path / "export"), f"{bucket}/e")
    storage.write_bytes(f"{bucket}/e/model/weights.bin", b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(storage.StorageError, match=r"e/model/weights.bin: sha256 differs"):
        storage.fetch_dir(f"{bucket}/e", cache=cache)
    assert list(cache.iterdir()) == []


def test_a_local_path_is_used_in_place(tmp_path: Path):
    assert storage.fetch_dir(str(tmp_path)) == tmp_path


def test_relative_locations_move_under_xalign_artifacts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(storage.ARTIFACTS_ENV, raising=False)
    assert storage.located("outputs/datasets") == "outputs/datasets"
    monkeypatch.setenv(storage.ARTIFACTS_ENV, "s3://bucket/xalign")
    assert storage.located("outputs/datasets") == "s3://bucket/xalign/outputs/datasets"
    assert storage.located("./outputs/runs") == "s3://bucket/xalign/outputs/runs"
    for kept in ("/data/runs", "s3://other/runs", "file:///data/runs"):
        assert storage.located(kept) == kept
