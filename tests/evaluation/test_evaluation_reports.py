"""Scoring hypothesis files end to end (Ray tasks, reports, lineage) and comparing runs with paired bootstrap."""

import json
import random
import shutil

import pytest

from cluster.locations import data_root
from cluster.ray_session import ray_session
from evaluation.compare import CompareError, compare
from evaluation.loaders import LoaderError, read_lines
from evaluation.outputs import read_generations, read_scores
from evaluation.recipe import EvalRecipe
from evaluation.reports.tables import fmt
from evaluation.runner import evaluate

FLORES = data_root() / "flores200" / "dev_subset510"
CODES = {"en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "zh": "zho_Hans"}
PAIRS = ["en-de", "en-fr", "de-en", "en-zh"]


@pytest.fixture(scope="module")
def cluster():
    with ray_session(num_cpus=2) as address:
        yield address


def _degrade(lines, seed):
    """Drop words and swap neighbours: a worse but still on-target system."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        words = [w for w in words if rng.random() > 0.3] or words[:1]
        if len(words) > 2:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words) if " " in line else line[: max(1, len(line) * 2 // 3)])
    return out


@pytest.fixture(scope="module")
def hyp_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hyps")
    for pair in PAIRS:
        ref = read_lines(FLORES / f"{CODES[pair.split('-')[1]]}.dev")
        systems = {"good": ref, "bad": _degrade(ref, 1)}
        if pair == "en-fr":  # German where French was asked for: all off-target
            systems["bad"] = read_lines(FLORES / "deu_Latn.dev")
        if pair == "en-zh":  # the first 6 of 60 caught in a loop until the token limit
            systems["bad"] = [line + "很好的例子。" * 10 if i < 6 else line for i, line in enumerate(systems["bad"])]
        for name, lines in systems.items():
            (root / name).mkdir(exist_ok=True)
            (root / name / f"{pair}.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return root


def _recipe(tmp_path, **kw):
    return EvalRecipe(name="unit", test_set={"format": "flores200", "path": str(FLORES)}, directions=PAIRS,
                      limit=60, output_dir=str(tmp_path), **kw)


def test_multi_system_run_reports(cluster, hyp_dirs, tmp_path):
    run = evaluate(_recipe(tmp_path, run_id="both"), hyp_dir=hyp_dirs)
    doc = read_scores(run)
    assert set(doc["systems"]) == {"good", "bad"}
    rows = {(r["system"], r["direction"]): r for r in doc["rows"]}
    assert len(rows) == 8
    assert rows[("good", "en-de")]["scores"]["bleu"] == pytest.approx(100.0)
    assert rows[("good", "en-zh")]["signatures"]["bleu"].split("|")[3] == "tok:zh"
    assert rows[("bad", "en-de")]["scores"]["bleu"] < 60
    assert rows[("bad", "en-fr")]["scores"]["off_target"] == pytest.approx(100.0)
    assert rows[("bad", "en-fr")]["details"]["off_target"]["confusion"] == {"deu_Latn": 60}
    assert rows[("good", "en-fr")]["scores"]["off_target"] == 0.0
    # Aggregates: groups and resource levels, macro-averaged over directions.
    agg = {(a["system"], a["name"]): a for a in doc["aggregates"]}
    en_x = [rows[("bad", k)]["scores"]["chrf"] for k in ("en-de", "en-fr", "en-zh")]
    assert agg[("bad", "en->X")]["scores"]["chrf"] == pytest.approx(sum(en_x) / 3)
    assert agg[("bad", "X->zh")]["directions"] == 1 and agg[("bad", "all")]["directions"] == 4
    pooled = agg[("bad", "all")]["off_target_pooled"]
    assert pooled["off_target"] == sum(rows[("bad", k)]["details"]["off_target"]["off_target"] for k in PAIRS) >= 60
    assert rows[("bad", "en-zh")]["scores"]["repetition"] == pytest.approx(10.0)
    assert rows[("bad", "en-zh")]["details"]["repetition"]["looping"] == 6
    assert all(rows[("good", k)]["scores"]["repetition"] == 0.0 for k in PAIRS)  # references never loop
    assert agg[("bad", "all")]["repetition_pooled"] == {"rate": pytest.approx(2.5), "looping": 6, "hypotheses": 240}
    # Generations keep id, source, references, hypothesis and sentence scores; hyps/ can be re-scored.
    gen = read_generations(run, "bad", "en-de")
    assert len(gen) == 60 and gen[0]["id"] == read_lines(FLORES / "ids.txt")[0]
    assert set(gen[0]["scores"]) == {"bleu", "chrf", "chrf++", "ter", "off_target", "repetition"}
    assert (run.root / "hyps" / "bad" / "en-de.txt").read_text().count("\n") == 60
    meta = json.loads((run.root / "generations" / "bad" / "en-de.meta.json").read_text())
    assert meta["model"]["kind"] == "hypotheses" and meta["direction"]["groups"] == ["en->X"]
    # Reports: files exist and carry the numbers.
    md = (run.root / "report.md").read_text()
    page = (run.root / "report.html").read_text()
    bad_bleu = fmt("bleu", rows[("bad", "en-de")]["scores"]["bleu"])
    assert "| bad | en-de |" in md and bad_bleu in md and bad_bleu in page
    assert "nrefs:1|case:mixed|eff:no|tok:zh" in md.replace("\\|", "|")
    assert page.count("data:image/png;base64,") >= 3 and "<table>" in page
    pngs = sorted(p.name for p in (run.root / "plots").glob("*.png"))
    assert {"off-target-rate-per-direction.png", "repetition-loop-rate-per-direction.png"} <= set(pngs)
    assert all((run.root / "plots" / p).stat().st_size > 1000 for p in pngs)
    assert "## Repetition loops" in md and "| bad | en-zh | 6 | 60 |" in md and "Repetition loops" in page
    assert f"![BLEU per direction](plots/{next(p for p in pngs if p.startswith('bleu'))})" in md


def test_compare_with_paired_bootstrap(cluster, hyp_dirs, tmp_path):
    base = evaluate(_recipe(tmp_path, run_id="base"), hyp_dir=hyp_dirs / "bad")
    new = evaluate(_recipe(tmp_path, run_id="new"), hyp_dir=hyp_dirs / "good", baseline=str(base.root))
    assert "## Change against `base`" in (new.root / "report.md").read_text()
    assert any(p.name.startswith("bleu-change") for p in (new.root / "plots").iterdir())
    folder, result = compare("base", "new", output_dir=str(tmp_path), n_samples=200)
    de = result["directions"]["en-de"]
    assert de["bleu"]["new"] == pytest.approx(100.0) and de["bleu"]["delta"] > 30
    assert de["bleu"]["p_value"] < 0.05 and de["bleu"]["significant"] is True
    # Off-target is a rate: McNemar's exact test on the paired per-segment verdicts.
    fr = result["directions"]["en-fr"]["off_target"]
    assert fr["delta"] == -100.0 and fr["only_base"] == fr["segments"] and fr["only_new"] == 0
    assert fr["significant"] is True and fr["p_value"] < 1e-6
    assert de["off_target"]["p_value"] == 1.0 and de["off_target"]["significant"] is False
    assert set(result["tested"]) == {"bleu", "chrf", "chrf++", "ter"} and result["skipped"] == {}
    for name in ("compare.json", "compare.md", "compare.html"):
        assert (folder / name).is_file()
    assert f"{de['bleu']['delta']:+.2f}" in (folder / "compare.md").read_text()
    # RUN:SYSTEM picks one system of a multi-system run; identical systems are not different.
    both = evaluate(_recipe(tmp_path, run_id="both2"), hyp_dir=hyp_dirs)
    _, same = compare("both2:good", "new", output_dir=str(tmp_path), n_samples=100)
    assert same["directions"]["en-de"]["bleu"]["delta"] == 0.0
    assert same["directions"]["en-de"]["bleu"]["significant"] is False
    with pytest.raises(CompareError, match="scored 2 systems"):
        compare(str(both.root), "new", output_dir=str(tmp_path))


def test_compare_refuses_different_test_sets(cluster, hyp_dirs, tmp_path):
    evaluate(_recipe(tmp_path, run_id="a"), hyp_dir=hyp_dirs / "good")
    r = _recipe(tmp_path, run_id="b")
    r.limit = 30
    evaluate(r, hyp_dir=hyp_dirs / "good")
    with pytest.raises(CompareError, match="different sources or references"):
        compare("a", "b", output_dir=str(tmp_path))


def test_hypotheses_from_a_trained_export_carry_lineage(cluster, hyp_dirs, tiny_model, tmp_path):
    export = tmp_path / "train-run" / "export"
    shutil.copytree(tiny_model, export)
    (export.parent / "lineage.json").write_text(json.dumps(
        {"dataset_id": "9f8e7d6c5b4a", "run_id": "train-run", "step": 50, "base_model": "gemma-3-270m"}))
    run = evaluate(_recipe(tmp_path, run_id="lin"), hyp_dir=hyp_dirs / "good", system=str(export))
    doc = read_scores(run)
    assert all(r["model"]["dataset_manifest_hash"] == "9f8e7d6c5b4a" for r in doc["rows"])
    assert all(r["model"]["train_run_id"] == "train-run" and r["model"]["step"] == 50 for r in doc["rows"])
    assert "9f8e7d6c5b4a" in (run.root / "report.md").read_text()


def test_hypothesis_files_must_match_the_test_set(cluster, hyp_dirs, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    for pair in PAIRS:
        (short / f"{pair}.txt").write_text("only one line\n", encoding="utf-8")
    pattern = r"en-de\.txt: 1 lines but the test set has 510 segments .*en-de\.txt:2: missing"
    with pytest.raises(LoaderError, match=pattern):
        evaluate(_recipe(tmp_path, run_id="short"), hyp_dir=short)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoaderError, match=r"no hypotheses for en-de; expected en-de.txt"):
        evaluate(_recipe(tmp_path, run_id="none"), hyp_dir=empty)
