"""Each metric against hand-computed values (the official WMT22 values are in test_wmt22_reproduction.py)."""

import math

import pytest

from cluster.locations import data_root
from evaluation.directions import Direction
from evaluation.loaders import read_lines
from evaluation.metrics.base import MetricInput
from evaluation.metrics.bleu import auto_tokenizer
from evaluation.metrics.registry import METRICS, get_metric
from evaluation.recipe import MetricsSettings

EN_DE = Direction.parse("en-de")


def _inp(hyps, refs, d=EN_DE, srcs=None):
    return MetricInput(d, srcs or ["x"] * len(hyps), hyps, refs)


def test_bleu_by_hand():
    # 1-4gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    res = get_metric("bleu").score(_inp(["the cat sat on the mat"], [["the cat sat on a mat"]]), sentence_level=True)
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    assert res.score == pytest.approx(expected, abs=1e-9)
    assert res.sentence_scores == [pytest.approx(expected, abs=1e-9)]
    assert res.signature == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def test_bleu_brevity_penalty_and_multiple_references():
    # hyp 4 words, closest ref 6 words: BP = exp(1 - 6/4); precisions 4/4, 3/3, 2/2, 1/1.
    res = get_metric("bleu").score(_inp(["the cat sat on"], [["the cat sat on the mat"]]))
    assert res.score == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-9)
    two = get_metric("bleu").score(_inp(["the cat sat on"], [["the cat sat on the mat"], ["the cat sat on"]]))
    assert two.score == pytest.approx(100.0) and two.signature.startswith("nrefs:2|")


def test_bleu_tokenizer_follows_the_target():
    assert auto_tokenizer("zho_Hans") == "zh" and auto_tokenizer("deu_Latn") == "13a"
    assert auto_tokenizer("tha_Thai") == "char"
    en_zh = Direction.parse("en-zh")
    res = get_metric("bleu").score(_inp(["我喜欢猫"], [["我喜欢狗"]], en_zh))
    # zh splits every CJK character: precisions 3/4, 2/3, 1/2 and 0/1, which sacrebleu's default "exp"
    # smoothing turns into 1/2 (1 / 2^k for the k-th order without matches).
    assert "tok:zh" in res.signature
    assert res.score == pytest.approx(100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, abs=1e-9)
    res = get_metric("bleu").score(_inp(["我喜欢猫和狗"], [["我喜欢猫和鸟"]], en_zh))
    assert res.score == pytest.approx(100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25, abs=1e-9)
    flat = get_metric("bleu", MetricsSettings(bleu_tokenize="13a")).score(
        _inp(["我喜欢猫和狗"], [["我喜欢猫和鸟"]], en_zh))
    assert flat.score == 0.0 and "tok:13a" in flat.signature


def test_chrf_identity_disjoint_and_word_order():
    same = get_metric("chrf").score(_inp(["Hallo Welt"], [["Hallo Welt"]]), sentence_level=True)
    assert same.score == pytest.approx(100.0) and same.sentence_scores == [pytest.approx(100.0)]
    assert get_metric("chrf").score(_inp(["xyz"], [["abc"]])).score == 0.0
    # One character n-gram order by hand (n=1, beta=2): hyp "ab", ref "abc": P=1, R=2/3.
    from sacrebleu.metrics import CHRF

    one = CHRF(char_order=1, word_order=0).corpus_score(["ab"], [["abc"]]).score
    assert one == pytest.approx(100 * (1 + 4) * 1 * (2 / 3) / (4 * 1 + 2 / 3), abs=1e-9)
    pp = get_metric("chrf++").score(_inp(["Hallo schöne Welt"], [["Hallo Welt"]]))
    plain = get_metric("chrf").score(_inp(["Hallo schöne Welt"], [["Hallo Welt"]]))
    assert "nw:2" in pp.signature and "nw:0" in plain.signature and pp.score != plain.score


def test_ter_by_hand():
    res = get_metric("ter").score(_inp(["the cat sat on the mat"], [["the cat sat on a mat"]]), sentence_level=True)
    assert res.score == pytest.approx(100 / 6, abs=1e-9)  # one substitution over six reference words
    assert res.sentence_scores == [pytest.approx(100 / 6, abs=1e-9)]
    assert get_metric("ter").higher_is_better is False


def test_off_target_rate_and_confusion():
    de = read_lines(data_root() / "ntrex128" / "deu_Latn.txt")[:6]
    fr = read_lines(data_root() / "ntrex128" / "fra_Latn.txt")[:4]
    en_fr = Direction.parse("en-fr")
    hyps = de + fr + ["OK", "12"]
    res = get_metric("off_target").score(_inp(hyps, [hyps], en_fr), sentence_level=True)
    assert res.details["judged"] == 10 and res.details["undetermined"] == 2
    assert res.details["off_target"] == 6 and res.details["confusion"] == {"deu_Latn": 6}
    assert res.score == pytest.approx(60.0)
    assert res.sentence_scores == [1.0] * 6 + [0.0] * 4 + [None, None]
    res = get_metric("off_target").score(MetricInput(en_fr, fr, fr, [fr]))
    assert res.score == 0.0 and res.details["confusion"] == {}


def test_every_metric_follows_the_contract():
    for name in METRICS:
        if name == "comet":
            continue  # needs a checkpoint and the COMET environment: test_comet.py
        m = get_metric(name)
        res = m.score(_inp(["Das ist ein Test.", "Noch einer hier."], [["Das ist ein Test.", "Noch einer."]]),
                      sentence_level=True)
        assert res.name == name and isinstance(res.score, float) and res.signature
        assert len(res.sentence_scores) == 2


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        _inp(["a", "b"], [["a"]])
