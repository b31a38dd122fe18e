"""Bad data (issue 10): truncated or corrupt JSONL, wrong encodings, parallel files of different lengths, empty
files and duplicate-only inputs either stop `xalign prepare` with an error naming the file and line, or are
quarantined in rejects/ with counts; a failed run leaves no dataset behind; a deleted shard is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster import manifest
from cluster.config import validate
from pipelines.data import readers
from pipelines.data.prepare import run_prepare
from pipelines.data.readers import InputError
from pipelines.data.recipe import PrepareRecipe

RECORDS = [
    {"instruction": f"Describe item number {i} of the museum's collection in one sentence.",
     "output": f"Item {i} is a carved wooden box from the northern coast, decorated with painted birds."}
    for i in range(12)
]


def jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), encoding="utf-8")
    return path


def instructions_recipe(tiny_model, out: Path, *paths: Path) -> PrepareRecipe:
    sources = {f"s{i}": {"type": "alpaca", "path": str(p), "lang": "en"} for i, p in enumerate(paths)}
    return validate(PrepareRecipe, {
        "name": "bad", "model": str(tiny_model), "max_seq_len": 256, "output_dir": str(out), "sources": sources,
        "builders": {"instructions": {"type": "instructions", "sources": list(sources)}},
        "ray": {"chunk_records": 5, "progress": False},
    })


def assert_nothing_written(out: Path) -> None:
    """No dataset, no staging folder (the CLI's library log under logs/ is not part of a dataset)."""
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], ["logs"])


def test_truncated_jsonl_stops_the_ray_run_naming_file_and_line(data_ray, tiny_model, tmp_path):
    """The bad line is read inside a Ray task: the error crosses Ray intact, and nothing is written."""
    good = "".join(json.dumps(x) + "\n" for x in RECORDS)
    f = tmp_path / "cut.jsonl"
    f.write_text(good + json.dumps(RECORDS[0])[:40], encoding="utf-8")  # the last record cut mid-string
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"cut\.jsonl:13: invalid JSON: Unterminated string"):
        run_prepare(instructions_recipe(tiny_model, out, f), address=data_ray)
    assert_nothing_written(out)


@pytest.mark.parametrize(("raw", "line", "what"), [
    ("latin1", 3, r"not valid UTF-8 \(invalid \w+ byte at byte \d+ of the line\)"),
    ("utf16", 1, r"UTF-16/UTF-32 text \(byte-order mark\)"),
    ("utf16-nobom", 1, r"NUL byte at byte 2 of the line"),
])
def test_wrong_encodings_fail_before_any_task(tiny_model, tmp_path, raw, line, what):
    """The driver checks every byte while hashing the inputs: no cluster starts for a file that cannot be read."""
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in RECORDS[:2])
    text += json.dumps({"instruction": "Schreibe über Köln.", "output": "Köln liegt am Rhein."}, ensure_ascii=False)
    data = {"latin1": text.encode("latin-1"), "utf16": text.encode("utf-16"),
            "utf16-nobom": text.encode("utf-16-le")}[raw]
    f = tmp_path / "enc.jsonl"
    f.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rf"enc\.jsonl:{line}: {what}"):
        run_prepare(instructions_recipe(tiny_model, out, f))
    assert_nothing_written(out)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    for name, body in (("a.jsonl", "".join(json.dumps(x) + "\n" for x in RECORDS[:3])),
                       ("a.json", json.dumps(RECORDS[:3], indent=1))):
        f = tmp_path / name
        f.write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert [it.output for it in readers.read_instructions(f, "alpaca", "en", 0, 3)] == [
            x["output"] for x in RECORDS[:3]]
        assert readers.count_positions(f) == 3


def test_invalid_utf8_in_a_json_array_names_the_line(tmp_path):
    f = tmp_path / "a.json"
    f.write_bytes(json.dumps(RECORDS[:3], indent=1).replace("Item 2", "Item \udcff2", 1)
                  .encode("utf-8", "surrogateescape"))
    with pytest.raises(InputError, match=r"a\.json:12: not valid UTF-8"):
        readers.count_positions(f)


def test_parallel_files_of_different_lengths(tiny_model, tmp_path):
    (tmp_path / "p.en").write_text("One.\nTwo.\nThree.\n", encoding="utf-8")
    (tmp_path / "p.de").write_text("Eins.\nZwei.\n", encoding="utf-8")
    out = tmp_path / "out"
    recipe = validate(PrepareRecipe, {
        "model": str(tiny_model), "output_dir": str(out),
        "sources": {"p": {"type": "parallel", "src_path": str(tmp_path / "p.en"), "tgt_path": str(tmp_path / "p.de"),
                          "src_lang": "en", "tgt_lang": "de"}},
        "builders": {"t": {"type": "translation", "sources": ["p"]}}, "ray": {"progress": False},
    })
    with pytest.raises(InputError, match=r"line counts differ: .*p\.en has 3 lines, .*p\.de has 2"):
        run_prepare(recipe)
    assert_nothing_written(out)


@pytest.mark.parametrize(("name", "body", "what"), [
    ("empty.jsonl", "", r"empty\.jsonl: empty file \(0 lines\)"),
    ("empty.json", "[\n]\n", r"empty\.json: no records \(an empty JSON array\)"),
])
def test_empty_files(tiny_model, tmp_path, name, body, what):
    f = tmp_path / name
    f.write_text(body, encoding="utf-8")
    good = jsonl(tmp_path / "good.jsonl", RECORDS)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=what):
        run_prepare(instructions_recipe(tiny_model, out, good, f))
    assert_nothing_written(out)


def test_cli_reports_input_errors_with_exit_code_2(tiny_model, tmp_path, capsys):
    from xalign.cli import main

    f = tmp_path / "empty.jsonl"
    f.write_text("", encoding="utf-8")
    out = tmp_path / "out"
    (tmp_path / "r.yaml").write_text(json.dumps(instructions_recipe(tiny_model, out, f).model_dump(mode="json")))
    assert main(["prepare", "--recipe", str(tmp_path / "r.yaml")]) == 2
    printed = "".join(capsys.readouterr().out.split())  # the console wraps lines wherever the long path ends
    assert "inputerror" in printed and "empty.jsonl:emptyfile" in printed
    assert_nothing_written(out)


def test_duplicate_only_inputs_are_quarantined_with_counts_and_a_deleted_shard_is_caught(
        data_ray, tiny_model, tmp_path):
    """20 copies of one record plus a second file with the same content: one sample survives, the other 39 are
    in rejects/exact_duplicate.parquet with the record they repeat; nothing is dropped without a reason."""
    a = jsonl(tmp_path / "a.jsonl", [RECORDS[0]] * 20)
    b = tmp_path / "b.jsonl"
    shutil.copy(a, b)
    folder = run_prepare(instructions_recipe(tiny_model, tmp_path / "out", a, b), address=data_ray)
    m = manifest.verify(folder)
    assert m["counts"]["built"] == 40 and m["counts"]["rejected_by_reason"] == {"exact_duplicate": 39}
    assert m["counts"]["sft_samples"] == 1
    rejects = pq.read_table(folder / "rejects/exact_duplicate.parquet").to_pylist()
    assert len(rejects) == 39 and {r["detail"] for r in rejects} == {"same text as instructions/s0/000000"}
    assert {(r["source"], r["source_index"]) for r in rejects} == (
        {("s0", i) for i in range(1, 20)} | {("s1", i) for i in range(20)})
    assert all(r["source_file"].endswith(("a.jsonl", "b.jsonl")) for r in rejects)

    # a shard deleted between prepare and train: verification names the missing file
    (folder / "sft/part-00000.parquet").unlink()
    with pytest.raises(manifest.DatasetIntegrityError, match=r"sft/part-00000\.parquet: listed in the manifest"):
        manifest.verify(folder)
