"""`xalign evaluate --output s3://...`: on a cluster whose nodes share no disk the report goes to object storage.

The tiny model through real vLLM (the settings of the end-to-end test), once into a local folder and once into a
real S3 API (moto's server, `s3` fixture): the uploaded folder must hold the files a local run writes, sealed by
`checksums.json`, with the same scores; nothing may land in the working directory and no staging copy may stay
in the cache. Then the stored run is resumed and compared straight from storage.
"""

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cluster import storage
from cluster.locations import cache_dir
from evaluation.outputs import find_run, read_scores, staging_dir
from xalign.cli import main

pytestmark = pytest.mark.slow

SUITE = ["--suite", "flores200-quick"]
OVERRIDES = ["limit=3", "languages=[de, zh]", "generation.max_tokens=12", "engine.max_model_len=512"]
# Fields that differ between two runs of the same recipe: identity of the run, wall clock, where it was written.
VOLATILE = {"run_id", "started", "duration_s", "generation", "recipe_hash"}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One embedded cluster for the module: each `xalign evaluate` below attaches instead of starting its own."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


def _stored_files(uri: str) -> set[str]:
    fs, root = storage.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path.removeprefix(root).lstrip("/") for i in infos if i.type == pafs.FileType.File}


def _local_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _stable(doc: dict) -> dict:
    return {**doc, "run": {k: v for k, v in doc["run"].items() if k not in VOLATILE}}


def test_report_to_object_storage_then_resume_and_compare_from_it(chatty_model, s3, tmp_path, monkeypatch, capsys):
    _, bucket = s3
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    local, uri = tmp_path / "local", f"{bucket}/reports"
    model = ["--model", str(chatty_model)]

    assert main(["evaluate", *SUITE, *model, "--output", str(local), *OVERRIDES, "run_id=run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", *SUITE, *model, "--output", uri, *OVERRIDES, "run_id=run"]) == 0
    printed = capsys.readouterr().out
    run_uri = f"{uri}/run"
    assert f"{run_uri}/report.md" in printed and f"{run_uri}/scores.json" in printed

    # The same layout as the local run (progress checkpoints, plots, generations, reports), sealed last.
    local_run = find_run("run", local)
    stored = _stored_files(run_uri)
    assert stored == _local_files(local_run.root) | {storage.CHECKSUMS}
    assert {"scores.json", "run.json", "report.md", "report.html", "recipe.resolved.yaml"} <= stored
    fetched = storage.fetch_dir(run_uri, cache=tmp_path / "fetched")
    local_doc, doc = read_scores(local_run), json.loads((fetched / "scores.json").read_text())
    # Greedy decoding of the same model: the same hypotheses, so the same scores.
    assert _stable(doc) == _stable(local_doc) and doc["run"]["run_id"] == "run"
    assert doc["run"]["directions"] == ["en-de", "en-zh", "de-en", "zh-en"]
    system = next(iter(doc["systems"]))
    for key in doc["run"]["directions"]:
        assert (fetched / "hyps" / system / f"{key}.txt").read_text() == local_run.hyps(system, key).read_text()
    assert "<html" in (fetched / "report.html").read_text()[:500].lower()

    # Nothing in the working directory (no outputs/, no `s3:` log folder), no staging copy left in the cache.
    assert list(cwd.iterdir()) == []
    assert not staging_dir(run_uri).parent.exists()
    logs = [line for line in printed.splitlines() if "library output" in line]
    assert logs and str(cache_dir() / "logs") in printed

    # A finished run in storage is refused as a local one is; `--resume` brings its checkpoints back from storage
    # (as another node would) and generates nothing.
    assert main(["evaluate", *SUITE, *model, "--output", uri, *OVERRIDES, "run_id=run"]) == 1
    assert "already exists" in capsys.readouterr().out
    assert main(["evaluate", *SUITE, *model, "--output", uri, *OVERRIDES, "--resume", "run"]) == 0
    assert "4 finished direction(s) kept" in capsys.readouterr().out
    resumed = json.loads(storage.read_text(f"{run_uri}/scores.json"))
    assert resumed["run"]["resumed_directions"] == doc["run"]["directions"] and resumed["rows"] == doc["rows"]
    assert not staging_dir(run_uri).parent.exists()

    # Compare a local run with the stored one; the comparison is written to storage too.
    assert main(["evaluate", "compare", str(local_run.root), run_uri, "--output", uri, "--samples", "20"]) == 0
    assert f"{uri}/compare-run-vs-run/compare.json" in capsys.readouterr().out
    result = json.loads(storage.read_text(f"{uri}/compare-run-vs-run/compare.json"))
    assert result["directions"] and all(v["bleu"]["delta"] == 0 for v in result["directions"].values())
    assert {"compare.md", "compare.html", storage.CHECKSUMS} <= _stored_files(f"{uri}/compare-run-vs-run")
    assert list(cwd.iterdir()) == []


def test_followups_report_to_object_storage(chatty_model, s3, tmp_path, monkeypatch, capsys):
    _, bucket = s3
    monkeypatch.chdir(tmp_path)
    uri = f"{bucket}/reports"
    argv = ["evaluate", "followups", "--model", str(chatty_model), "--limit", "1", "--languages", "de,fr",
            "--output", uri, "run_id=check", "engine.max_model_len=512", "generation.max_tokens=12"]
    assert main(argv) == 0
    assert f"{uri}/check/followups.json" in capsys.readouterr().out
    assert _stored_files(f"{uri}/check") == {"followups.json", "conversations.jsonl", "recipe.resolved.yaml",
                                             storage.CHECKSUMS}
    report = json.loads(storage.read_text(f"{uri}/check/followups.json"))
    assert report["run"]["run_id"] == "check" and report["kinds"]["retarget"]["n"] == 2
    assert list(tmp_path.iterdir()) == [] and not staging_dir(f"{uri}/check").parent.exists()
