"""The GRPO rewards (pipelines.train.rewards): pinned values for each reward, the same verdicts as the evaluation
metrics they mirror, the weighted sum and its components, settings validation, and [0, 1] on arbitrary text."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sacrebleu.metrics import BLEU, CHRF

from cluster.languages import UnknownLanguageError
from evaluation.directions import Direction
from evaluation.metrics.base import MetricInput
from evaluation.metrics.registry import get_metric
from pipelines.train.rewards.base import Rollout
from pipelines.train.rewards.length import length_ratio_reward
from pipelines.train.rewards.registry import REWARDS, get_reward, score
from pipelines.train.rewards.settings import REWARD_NAMES, RewardSettings

DE_REF = "Der Hund schläft heute im Garten unter dem alten Baum."
EN_SRC = "The dog sleeps in the garden today under the old tree."
GERMAN = "Der Hund schläft heute im Garten unter dem alten Baum."
FRENCH = "Le chien dort aujourd'hui dans le jardin sous le vieil arbre."
LOOP = "ya kwanza ya kwanza ya kwanza ya kwanza ya kwanza"


def rollout(completion: str, reference: str = DE_REF, source: str = EN_SRC, tgt: str = "deu_Latn",
            finish_reason: str | None = "stop") -> Rollout:
    return Rollout(completion, reference, source, "eng_Latn", tgt, finish_reason, len(completion.split()))


def one(name: str, r: Rollout, reward_settings: RewardSettings | None = None) -> float:
    [value] = get_reward(name, reward_settings).score([r])
    return value


def test_chrf_is_sentence_chrf2_over_100():
    hyp = "Der Hund schläft"
    corpus = CHRF().corpus_score([hyp], [[DE_REF]]).score  # sacrebleu's corpus chrF of the one sentence
    assert one("chrf", rollout(hyp)) == pytest.approx(corpus / 100, abs=1e-12)
    assert one("chrf", rollout(hyp)) == pytest.approx(0.3155088020229478, abs=1e-12)
    assert one("chrf", rollout(GERMAN)) == 1.0 and one("chrf", rollout("")) == 0.0


def test_bleu_is_smoothed_sentence_bleu_with_the_evaluation_tokenizer():
    # 1-4gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    r = rollout("the cat sat on the mat", reference="the cat sat on a mat", tgt="eng_Latn", source="x")
    assert one("bleu", r) == pytest.approx(math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4))
    # zh splits every hanzi (13a would see one word and give 0): precisions 5/6, 4/5, 3/4, 2/3.
    zh = rollout("我喜欢猫和狗", reference="我喜欢猫和鸟", tgt="zho_Hans")
    assert one("bleu", zh) == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25, abs=1e-12)
    sentence = BLEU(tokenize="zh", effective_order=True).sentence_score("我喜欢猫和狗", ["我喜欢猫和鸟"]).score
    assert one("bleu", zh) == pytest.approx(sentence / 100, abs=1e-12)
    # Effective order: a 3-word hypothesis has no 4-grams, yet scores above 0 (below 1: brevity penalty).
    assert 0 < one("bleu", rollout("the cat sat", reference="the cat sat on a mat", tgt="eng_Latn")) < 1
    assert one("bleu", rollout(GERMAN)) == 1.0  # clamped: sacrebleu's arithmetic gives 100.00000000000004


def test_language_is_the_off_target_decision():
    assert one("language", rollout(GERMAN)) == 1.0
    assert one("language", rollout(GERMAN, tgt="fra_Latn")) == 0.0
    assert one("language", rollout(FRENCH)) == 0.0 and one("language", rollout(FRENCH, tgt="fra_Latn")) == 1.0
    assert one("language", rollout("ok")) == 0.5  # too short to judge
    assert one("language", rollout("ok"), RewardSettings(language_undetermined=0.0)) == 0.0
    # Exactly the evaluation's off-target verdicts (1 - off; undetermined where it is None).
    hyps = [GERMAN, FRENCH, "ok", "", LOOP, "Der Hund"]
    off = get_metric("off_target").score(
        MetricInput(Direction.parse("en-de"), [EN_SRC] * len(hyps), hyps, [[DE_REF] * len(hyps)]), sentence_level=True)
    rewards = get_reward("language").score([rollout(h) for h in hyps])
    assert rewards == [0.5 if v is None else 1.0 - v for v in off.sentence_scores]


def test_repetition_is_the_evaluation_loop_rule():
    assert one("repetition", rollout(LOOP, tgt="swh_Latn")) == 0.0
    assert one("repetition", rollout(GERMAN)) == 1.0
    src = "No, no, no, no, no."  # a faithful translation of a repetitive source is not a loop ...
    assert one("repetition", rollout("Nein, nein, nein, nein, nein.", source=src)) == 1.0
    assert one("repetition", rollout("Nein, nein, nein, nein, nein.", source=EN_SRC)) == 0.0
    assert one("repetition", rollout("Nein, " * 30, source=src)) == 0.0  # ... far more copies than it has is
    hyps = [LOOP, GERMAN, "Nein, nein, nein, nein, nein.", "Nein, " * 30, "我们的的的的的的的的的的的的"]
    srcs = [EN_SRC, EN_SRC, src, src, EN_SRC]
    rep = get_metric("repetition").score(
        MetricInput(Direction.parse("en-de"), srcs, hyps, [[DE_REF] * len(hyps)]), sentence_level=True)
    rewards = get_reward("repetition").score([rollout(h, source=s) for h, s in zip(hyps, srcs)])
    assert rewards == [1.0 - v for v in rep.sentence_scores] == [0.0, 1.0, 1.0, 0.0, 0.0]


def test_length_band_decay_and_cut_off():
    assert [length_ratio_reward(x, 0.5, 2.0) for x in (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 9.0)] == [
        0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    ref = "a" * 40
    assert [one("length", rollout("b" * n, reference=ref)) for n in (0, 10, 20, 40, 80, 120, 160)] == [
        0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    assert one("length", rollout(GERMAN, finish_reason="length")) == 0.0  # cut off at max_tokens: never ended
    assert one("length", rollout(GERMAN, finish_reason=None)) == 1.0
    assert one("length", rollout("b" * 10, reference=ref), RewardSettings(length_band=(0.25, 1.0))) == 1.0
    # Width, not characters: 10 hanzi are 20 columns, as long as a 20-letter reference.
    assert one("length", rollout("我" * 10, reference="a" * 40, tgt="zho_Hans")) == 1.0
    assert one("length", rollout("我" * 10, reference="a" * 80, tgt="zho_Hans")) == 0.5


def test_score_is_the_weighted_sum_of_the_computed_components():
    batch = [rollout(GERMAN), rollout(FRENCH), rollout("ok"), rollout(LOOP),
             rollout("Der Hund", finish_reason="length")]
    total, components = score(batch)
    assert list(components) == ["chrf", "language", "repetition", "length"]  # bleu weighs 0: not computed
    assert components["language"] == [1.0, 0.0, 0.5, 0.0, 1.0]
    assert components["repetition"] == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert components["length"][4] == 0.0
    weights = {"chrf": 1.0, "language": 1.0, "repetition": 0.5, "length": 0.25}
    assert total == pytest.approx([sum(w * components[k][i] for k, w in weights.items()) for i in range(5)])
    assert total[0] == pytest.approx(2.75)

    only = RewardSettings(weights={"chrf": 0, "language": 0, "repetition": 0, "length": 0, "bleu": 2.0})
    total, components = score(batch, only)
    assert list(components) == ["bleu"] and total == pytest.approx([2 * v for v in components["bleu"]])
    assert score([], only) == ([], {"bleu": []})


def test_settings_reject_bad_weights_naming_the_key():
    with pytest.raises(ValidationError, match=r"weights\.comet\n.*Extra inputs"):
        RewardSettings(weights={"comet": 1.0})
    with pytest.raises(ValidationError, match=r"weights\.chrf\n.*greater than or equal to 0"):
        RewardSettings(weights={"chrf": -1.0})
    for bad in (math.nan, math.inf):
        with pytest.raises(ValidationError, match=r"weights\.language"):
            RewardSettings(weights={"language": bad})
    with pytest.raises(ValidationError, match="every reward weight is 0"):
        RewardSettings(weights={"chrf": 0, "language": 0, "repetition": 0, "length": 0})
    with pytest.raises(ValidationError, match=r"language_undetermined"):
        RewardSettings(language_undetermined=1.5)
    with pytest.raises(ValidationError, match=r"length_band\n.*0 < low <= high"):
        RewardSettings(length_band=(2.0, 0.5))
    with pytest.raises(ValidationError, match=r"rewards\n.*Extra inputs"):
        RewardSettings(rewards={})
    assert tuple(REWARDS) == REWARD_NAMES


def test_rollouts_take_flores_codes():
    with pytest.raises(ValueError, match=r"'de' is not a Flores-200 code.*deu_Latn"):
        Rollout("x", "y", "z", "eng_Latn", "de", "stop", 1)
    with pytest.raises(UnknownLanguageError):
        Rollout("x", "y", "z", "eng_Latn", "xx_Nope", "stop", 1)
    with pytest.raises(ValueError, match="negative"):
        Rollout("x", "y", "z", "eng_Latn", "deu_Latn", "stop", -1)


ALL = RewardSettings(weights=dict.fromkeys(REWARD_NAMES, 1.0))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(completion=st.text(max_size=200), reference=st.text(max_size=200), source=st.text(max_size=200),
       tgt=st.sampled_from(["deu_Latn", "zho_Hans", "jpn_Jpan", "tha_Thai", "wol_Latn", "hin_Deva"]),
       finish_reason=st.sampled_from(["stop", "length", "abort", None]))
def test_every_reward_is_in_the_unit_interval(completion, reference, source, tgt, finish_reason):
    r = Rollout(completion, reference, source, "eng_Latn", tgt, finish_reason, 0)
    total, components = score([r, r], ALL)
    assert list(components) == list(REWARD_NAMES)
    for values in components.values():
        assert values[0] == values[1] and 0.0 <= values[0] <= 1.0
    assert 0.0 <= total[0] <= len(REWARD_NAMES)
