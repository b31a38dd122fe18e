"""`run_prepare` end to end on a real embedded Ray cluster: the output contract, byte-identical shards for the
same inputs and recipe (whatever the scheduling, Ray or single-process), mixing ratios, rejects with reasons."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cluster import manifest, prompts
from cluster.config import validate
from cluster.tokenizer import load_tokenizer
from pipelines.data.prepare import run_prepare
from pipelines.data.recipe import PrepareRecipe
from pipelines.data.reference import run_reference


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def prepared(data_ray, tiny_model, small_recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    return run_prepare(validate(PrepareRecipe, small_recipe(str(tiny_model), str(out))), address=data_ray)


def test_output_contract(prepared: Path):
    m = manifest.verify(prepared)  # dataset id and every file's sha256
    assert prepared.name == f"small-{m['dataset_id'][:12]}"
    assert (prepared / "recipe.resolved.yaml").is_file() and not list(prepared.parent.glob(".staging-*"))
    sft = [pq.read_table(prepared / e["file"]) for e in m["shards"]["sft"]]
    assert [e["file"] for e in m["shards"]["sft"]] == [f"sft/part-{i:05d}.parquet" for i in range(len(sft))]
    for t in sft:
        assert {"input_ids", "labels", "position_ids", "sample_ids", "num_tokens"} <= set(t.column_names)
    dpo = pq.read_table(prepared / m["shards"]["dpo"][0]["file"])
    assert {"sample_id", "lang", "reason", "prompt_ids", "chosen_ids", "rejected_ids"} <= set(dpo.column_names)
    assert sum(t.num_rows for t in sft) == m["tokens"]["sft"]["rows"]
    assert sum(len(x) for t in sft for x in t["sample_ids"].to_pylist()) == m["counts"]["sft_samples"] == 200
    assert 0 < m["tokens"]["sft"]["packing_efficiency"] <= 1
    for entry in m["inputs"]:
        assert len(entry["sha256"]) == 64 and not entry["file"].startswith("/")


def test_every_record_is_kept_or_rejected_with_a_reason(prepared: Path):
    m = manifest.load(prepared)
    c = m["counts"]
    kept = sum(sum(per.values()) for per in c["available_by_builder_language"].values())
    assert c["built"] == kept + c["rejected"] and c["rejected"] > 0
    rejects = {e["reason"]: pq.read_table(prepared / e["file"]) for e in m["rejects"]}
    assert {r: t.num_rows for r, t in rejects.items()} == c["rejected_by_reason"]
    for reason, t in rejects.items():
        rows = t.to_pylist()
        assert all(r["reason"] == reason and r["detail"] and r["source_file"] and r["record"] for r in rows)


def test_packed_rows_mask_prompts_and_restart_positions(prepared: Path, tiny_model):
    tok = load_tokenizer(tiny_model)
    m = manifest.load(prepared)
    t = pq.read_table(prepared / m["shards"]["sft"][0]["file"]).to_pylist()
    for row in t[:50]:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert len(starts) == len(row["sample_ids"]) and row["num_tokens"] == len(row["input_ids"]) <= 768
        for a, b in zip(starts, [*starts[1:], len(row["input_ids"])]):
            ids, labels = row["input_ids"][a:b], row["labels"][a:b]
            assert ids[0] == tok.bos_token_id and labels[0] == -100
            text = tok.decode(ids)
            assert text.startswith(tok.bos_token + prompts.START + "user\n") and text.endswith(prompts.END + "\n")
            trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
            assert trained.endswith(prompts.END) and prompts.START not in trained  # only the model's answers


def test_mixing_matches_the_recipe_ratios(prepared: Path):
    m = manifest.load(prepared)
    ratios = m["recipe"]["mixing"]["ratios"]
    got = Counter()
    for e in m["shards"]["sft"]:
        for ids in pq.read_table(prepared / e["file"], columns=["sample_ids"])["sample_ids"].to_pylist():
            got.update(s.split("/")[0] for s in ids)
    assert sum(got.values()) == 200
    for builder, r in ratios.items():
        assert abs(got[builder] / 200 - r) <= 0.02, (builder, got)


def test_preference_pairs(prepared: Path, tiny_model):
    tok = load_tokenizer(tiny_model)
    m = manifest.load(prepared)
    rows = [r for e in m["shards"]["dpo"] for r in pq.read_table(prepared / e["file"]).to_pylist()]
    assert rows and {r["reason"] for r in rows} <= {"off_target", "degraded"} and len(rows) == m["counts"]["dpo_pairs"]
    for r in rows:
        assert r["chosen_ids"] != r["rejected_ids"] and tok.decode(r["chosen_ids"]).endswith(prompts.END)
        if r["reason"] == "off_target":
            assert r["rejected_lang"] != r["lang"]


def test_same_inputs_and_recipe_give_identical_bytes(prepared: Path, data_ray, tiny_model, small_recipe, tmp_path,
                                                     capsys):
    """Another Ray run through the CLI with different scheduling settings, and the single-process reference."""
    from xalign.cli import main

    recipe = small_recipe(str(tiny_model), str(tmp_path / "again"))
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(recipe))
    rc = main(["prepare", "--recipe", str(path), "ray.chunk_records=17", "ray.tokenize_actors=1",
               "ray.batch_size=7", "ray.shuffle_blocks=3", "--address", data_ray])
    assert rc == 0
    again = next((tmp_path / "again").iterdir())
    out = capsys.readouterr().out
    assert again.name in out.replace("\n", "") or again.name[:18] in out
    assert "packing efficiency" in out and "rejected records" in out

    reference = run_reference(validate(PrepareRecipe, small_recipe(str(tiny_model), str(tmp_path / "ref"))))
    first = files_of(prepared)
    assert again.name == reference.name == prepared.name  # same dataset id
    assert files_of(again) == first and files_of(reference) == first
    assert (again / "manifest.json").read_bytes() == (prepared / "manifest.json").read_bytes()
    assert json.loads((reference / "run.json").read_text())["engine"] == "single-process"



def test_without_dedup_no_shuffle_precedes_tokenizing_and_the_bytes_match(data_ray, tiny_model, small_recipe, tmp_path):
    """With dedup off the build stage feeds the tokenizer actors directly (Ray Data fuses the two); the dataset
    must still be the single-process reference's, byte for byte."""
    def recipe(out: str) -> PrepareRecipe:
        raw = small_recipe(str(tiny_model), out)
        raw["filters"] = {**raw.get("filters", {}), "dedup": {"exact": False, "near": False}}
        return validate(PrepareRecipe, raw)

    ray_out = run_prepare(recipe(str(tmp_path / "ray")), address=data_ray)
    reference = run_reference(recipe(str(tmp_path / "ref")))
    assert ray_out.name == reference.name and files_of(ray_out) == files_of(reference)
    run = json.loads((ray_out / "run.json").read_text())
    assert run["records_built"] == manifest.load(ray_out)["counts"]["built"]


def test_rl_split_end_to_end_read_by_train(data_ray, tiny_model, tmp_path):
    """An `rl` builder next to an SFT one: prompts written to rl/ (never mixed or packed), listed in the manifest,
    byte-identical to the single-process reference, and read back by training's dataset check."""
    from pipelines.data.schema import RL_SCHEMA
    from pipelines.train import shards as train_shards

    en = ["The committee will publish its final report on the new railway line next spring.",
          "Tourists visiting the old town are asked to respect the quiet hours after ten.", "Hello there."]
    de = ["Der Ausschuss wird seinen Abschlussbericht über die neue Bahnstrecke im nächsten Frühjahr veröffentlichen.",
          "The museum in the city centre will stay closed for renovation until the end of the year.", ""]
    for name, lines in (("en.txt", en), ("de.txt", de)):
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def recipe(out: str) -> PrepareRecipe:
        return validate(PrepareRecipe, {
            "name": "rl-small", "model": str(tiny_model), "max_seq_len": 256, "output_dir": out,
            "sources": {
                "ntrex": {"type": "multi_parallel", "path": "ntrex128", "languages": ["en", "de", "zh", "sw"],
                          "limit": 60},
                "mine": {"type": "parallel", "src_path": str(tmp_path / "en.txt"),
                         "tgt_path": str(tmp_path / "de.txt"), "src_lang": "en", "tgt_lang": "de"},
            },
            "builders": {
                "translation": {"type": "translation", "sources": ["ntrex"], "share": 0.2},
                "rl": {"type": "rl", "sources": ["ntrex"], "per_direction": 12, "skip_lines": 10},
                "rl_mine": {"type": "rl", "sources": ["mine"], "directions": ["en->de"]},
            },
            "shards": {"num_shards": 2},
            "ray": {"chunk_records": 25, "progress": False},
        })

    out = run_prepare(recipe(str(tmp_path / "ray")), address=data_ray)
    m = manifest.verify(out)
    entries = m["shards"]["rl"]
    assert [e["file"] for e in entries] == ["rl/part-00000.parquet", "rl/part-00001.parquet"]
    tables = [pq.read_table(out / e["file"]) for e in entries]
    assert all(t.schema.equals(RL_SCHEMA) for t in tables)
    assert [t.num_rows for t in tables] == [e["rows"] for e in entries]
    rows = [r for t in tables for r in t.to_pylist()]
    assert len(rows) == m["counts"]["rl_prompts"] == m["tokens"]["rl"]["prompts"] > 0
    assert m["counts"]["available_by_builder_language"]["rl_mine"] == {"deu_Latn": 1}
    assert sum(m["tokens"]["rl"]["prompts_by_direction"].values()) == len(rows)
    tok = load_tokenizer(tiny_model)
    for r in rows:
        msgs = prompts.translation_messages(r["src_lang"], r["tgt_lang"], r["source_text"])
        assert r["prompt_ids"] == prompts.encode_prompt(tok, msgs) and r["num_tokens"] == len(r["prompt_ids"])
        assert r["num_tokens"] + r["reference_tokens"] <= 256 and r["reference"]
    assert [r["sample_id"] for r in rows] != sorted(r["sample_id"] for r in rows)  # shuffled by the seed

    # RL prompts are neither mixed nor packed into SFT; rejected ones are kept with a reason
    sft_ids = {s for e in m["shards"]["sft"] for x in pq.read_table(out / e["file"])["sample_ids"].to_pylist()
               for s in x}
    assert sft_ids and not any(s.startswith("rl") for s in sft_ids)
    rejects = {e["reason"]: pq.read_table(out / e["file"]).to_pylist() for e in m["rejects"]}
    mine = {r["sample_id"]: r for rs in rejects.values() for r in rs if r["builder"] == "rl_mine"}
    assert {r["reason"] for r in mine.values()} == {"lang_mismatch", "too_short"}
    assert json.loads(mine["rl_mine/mine/000002/eng_Latn>deu_Latn"]["record"])["reference"] == de[1]

    # training reads and checks the split from the manifest (rows, columns, tokenizer, checksums)
    info = train_shards.open_rl_dataset(out)
    assert (info.split, info.num_rows, info.dataset_id) == ("rl", len(rows), m["dataset_id"])
    assert [Path(f).name for f in info.files] == ["part-00000.parquet", "part-00001.parquet"]
    train_shards.check_tokenizer(info, tiny_model)
    train_shards.verify_checksums(info)
    assert set(train_shards.COLUMNS["rl"]) <= set(RL_SCHEMA.names)

    reference = run_reference(recipe(str(tmp_path / "ref")))
    assert reference.name == out.name and files_of(reference) == files_of(out)


def test_output_dir_in_object_storage_gives_the_same_dataset(prepared: Path, data_ray, tiny_model, small_recipe, s3,
                                                             tmp_path):
    """Writer tasks put their shards straight into S3 (nodes share no disk); the driver finishes the folder there,
    `checksums.json` last. Same inputs and recipe: the same id and bytes as the local run, nothing staged left."""
    from cluster import storage

    _, bucket = s3
    out = run_prepare(validate(PrepareRecipe, small_recipe(str(tiny_model), f"{bucket}/datasets")), address=data_ray)
    assert out == f"{bucket}/datasets/{prepared.name}"
    assert manifest.load(out)["dataset_id"] == manifest.load(prepared)["dataset_id"]
    local = storage.fetch_dir(out, cache=tmp_path)  # every file against checksums.json
    assert files_of(local) == files_of(prepared)
    manifest.verify(local)
    fs, path = storage.filesystem(f"{bucket}/datasets")
    from pyarrow.fs import FileSelector

    names = {i.path.split("/")[2] for i in fs.get_file_info(FileSelector(path, recursive=True))}
    assert names == {prepared.name}  # no .staging-* left behind


@pytest.mark.parametrize(("cpus", "nodes", "actors"), [(2, 1, 2), (3, 1, 4), (3, 3, 2), (2, 2, 1), (16, 4, 8)])
def test_tokenizer_pool_leaves_a_whole_cpu_on_one_node(cpus: int, nodes: int, actors: int):
    """3 one-CPU nodes with 4 half-CPU actors can strand 0.5 free on each node: the shuffle's 1-CPU split tasks
    then wait forever (seen on `xalign cluster up --workers 2`). The pool is sized for the worst spread."""
    from pipelines.data.prepare import tokenize_pool_size
    from pipelines.data.recipe import RayExecution

    assert tokenize_pool_size(RayExecution(), cpus, lambda m: None, nodes=nodes) == actors
