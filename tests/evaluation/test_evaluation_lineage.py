import json
import shutil

import pytest

from evaluation.lineage import LineageError, fingerprint, identify


def _export(tiny_model, tmp_path):
    export = tmp_path / "run-7" / "export"
    shutil.copytree(tiny_model, export)
    return export


def test_lineage_beside_the_export_gives_the_manifest_hash(tiny_model, tmp_path):
    export = _export(tiny_model, tmp_path)
    plain = identify(export)
    assert plain["lineage"] is None and plain["dataset_manifest_hash"] is None and plain["name"] == "tiny-llama"
    (export.parent / "lineage.json").write_text(json.dumps(
        {"dataset_id": "ds-3f2a9c", "run_id": "run-7", "step": 120, "base_model": "gemma-3-270m"}))
    ident = identify(export)
    assert ident["dataset_manifest_hash"] == "ds-3f2a9c" and ident["name"] == "run-7-step120"
    assert ident["lineage"]["run_id"] == "run-7" and ident["lineage"]["step"] == 120
    assert ident["fingerprint"] == plain["fingerprint"]


def test_lineage_inside_wins_and_bad_files_are_errors(tiny_model, tmp_path):
    export = _export(tiny_model, tmp_path)
    (export.parent / "lineage.json").write_text(json.dumps(
        {"dataset_id": "outer", "run_id": "r", "step": 1, "base_model": "b"}))
    (export / "lineage.json").write_text(json.dumps({"dataset_id": "inner", "run_id": "r", "step": 2,
                                                     "base_model": "b"}))
    assert identify(export)["dataset_manifest_hash"] == "inner"
    (export / "lineage.json").write_text(json.dumps({"dataset_id": "x"}))
    with pytest.raises(LineageError, match=r"lineage.json: missing key\(s\) run_id, step, base_model"):
        identify(export)
    (export / "lineage.json").write_text("{not json")
    with pytest.raises(LineageError, match=r"lineage.json:1: invalid JSON"):
        identify(export)


def test_fingerprint_follows_the_weights(tiny_model, tmp_path):
    export = _export(tiny_model, tmp_path)
    before = fingerprint(export)
    weights = export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint(export) != before
