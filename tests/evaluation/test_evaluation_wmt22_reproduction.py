"""The correctness bar: scoring every WMT22 system output in the shared data reproduces the official BLEU and
chrF (`wmt22/scores/automatic-scores.tsv`) to ±0.01, and the BLEU ranking of the systems per pair.
"""

import csv

import pytest

from cluster.config import load_recipe
from cluster.locations import data_root
from cluster.ray_session import ray_session
from evaluation.outputs import read_scores
from evaluation.recipe import EvalRecipe
from evaluation.runner import evaluate

pytestmark = pytest.mark.slow

WMT22 = data_root() / "wmt22"


def _official() -> dict[tuple[str, str, str], float]:
    with (WMT22 / "scores" / "automatic-scores.tsv").open(encoding="utf-8") as fh:
        return {(r["pair"], r["system"], r["metric"]): float(r["score"]) for r in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def cluster():
    with ray_session(num_cpus=2) as address:
        yield address


def test_every_system_reproduces_official_bleu_chrf_and_ranking(cluster, tmp_path):
    recipe = load_recipe(EvalRecipe, "eval-wmt22-systems", [f"output_dir={tmp_path}", "run_id=wmt22"])
    doc = read_scores(evaluate(recipe, hyp_dir=WMT22))
    official = _official()
    on_disk = {(p.parent.parent.name, p.stem) for p in WMT22.glob("*/systems/*.txt")}
    assert {(r["direction"], r["system"]) for r in doc["rows"]} == on_disk  # every system output was scored
    compared = 0
    for r in doc["rows"]:
        for metric, key in (("bleu", "bleu-A"), ("chrf", "chrf-A")):
            ref = official.get((r["direction"], r["system"], key))
            if ref is None:
                continue  # ALMA outputs have no official score
            got = r["scores"][metric]
            assert abs(got - ref) <= 0.01, (r["direction"], r["system"], metric, got, ref)
            compared += 1
    assert compared == 2 * sum(1 for pair, system in on_disk if (pair, system, "bleu-A") in official) == 90
    for pair in ("de-en", "en-de", "en-zh", "ja-en"):
        ours = {r["system"]: r["scores"]["bleu"] for r in doc["rows"] if r["direction"] == pair}
        theirs = {s: v for (p, s, m), v in official.items() if p == pair and m == "bleu-A" and s in ours}
        assert sorted(theirs, key=theirs.get, reverse=True) == sorted(theirs, key=ours.get, reverse=True), pair
    sig = {r["signatures"]["bleu"] for r in doc["rows"] if r["direction"] == "en-zh"}
    assert sig == {"nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0"}


def test_multi_reference_scores_reproduce_official_all(cluster, tmp_path):
    overrides = [f"output_dir={tmp_path}", "run_id=wmt22-all", "test_set.references=all", "directions=[en-zh]"]
    recipe = load_recipe(EvalRecipe, "eval-wmt22-systems", overrides)
    doc = read_scores(evaluate(recipe, hyp_dir=WMT22))
    official = _official()
    checked = 0
    for r in doc["rows"]:
        assert r["references"] == 2
        for metric, key in (("bleu", "bleu-all"), ("chrf", "chrf-all")):
            if (ref := official.get(("en-zh", r["system"], key))) is not None:
                assert abs(r["scores"][metric] - ref) <= 0.01, (r["system"], metric)
                checked += 1
    assert checked == 26
