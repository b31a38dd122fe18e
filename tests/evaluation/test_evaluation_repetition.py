"""The repetition-loop metric (loops in any script, normal text left alone, real references never flagged) and the
evaluation's repetition-penalty knob (recipe, endpoint requests, resume checkpoints)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cluster.locations import data_root
from evaluation.aggregate import aggregate
from evaluation.directions import Direction
from evaluation.generation.endpoint import EndpointClient
from evaluation.loaders import read_lines
from evaluation.metrics.base import MetricInput
from evaluation.metrics.registry import get_metric
from evaluation.metrics.repetition import MIN_WIDTH, find_loop, width
from evaluation.progress import setup
from evaluation.recipe import EndpointSettings, EvalRecipe, GenerationSettings
from evaluation.reports.tables import LOWER_IS_BETTER, fmt, repetition_table

FLORES = data_root() / "flores200" / "dev_subset510"
EN_SW = Direction.parse("en-sw")

LOOPS = {
    # The example, cut mid-unit by max_tokens.
    "swahili": "Mambo ya kwanza ya kwanza ya kwanza ya kwanza ya kwanza ya kwanza ya kwa",
    "hindi": "मैं कल बाज़ार गया और फिर मैं कल बाज़ार गया और फिर मैं कल बाज़ार गया और फिर मैं कल",
    "chinese": "这是一个很好的例子。这是一个很好的例子。这是一个很好的例子。这是一个很好",
    "chinese_short_unit": "我们的的的的的的的的的的的的",
    "japanese": "東京は大きい都市です東京は大きい都市です東京は大きい都市です",
    "thai": "ฉันไปตลาดฉันไปตลาดฉันไปตลาดฉันไปตลาดฉันไปตลาด",
    "late_loop": "The committee approved the budget on Tuesday, and then the the the the the the the the the",
    "punctuation": "There is no problem as it is ! ! ! ! ! ! ! ! ! ! ! !",
    # Copies that vary: no exact tandem repeat, but few distinct character 8-grams.
    "varying": ", ".join(["mambo ya kwanza", "mambo ya pili", "mambo ya kwanza", "mambo ya tatu"] * 4),
}

NORMAL = [
    "The cat sat on the mat, and the dog slept by the door of the house.",
    "Il a parlé de la politique de la ville et de la région de la capitale.",
    "Pole pole ndio mwendo.",  # reduplication
    "Anak-anak bermain di taman bersama-sama.",
    "他慢慢地走回家，高高兴兴地吃了饭。",
    "いろいろな人がいろいろなことを言う。",
    "It was very very cold.",
    "Ha ha ha, that is funny.",  # a short triple: under the width a loop needs
    "The company earned 1,000,000,000 dollars in 2020 and 2,000,000,000 in 2021.",
    "เขาเดินช้าๆ ไปที่ตลาดทุกวันๆ",
    "",
    "OK",
]


def _score(hyps, srcs=None, sentence_level=True):
    srcs = srcs or ["A source sentence."] * len(hyps)
    return get_metric("repetition").score(MetricInput(EN_SW, srcs, hyps, [hyps]), sentence_level=sentence_level)


@pytest.mark.parametrize("name", LOOPS)
def test_loops_are_caught_in_every_script(name):
    loop = find_loop(LOOPS[name])
    assert loop is not None, name
    assert loop.copies >= 3


def test_the_repeated_unit_is_reported_readably():
    assert find_loop(LOOPS["swahili"]).unit == "ya kwanza "
    assert find_loop(LOOPS["chinese"]).unit == "这是一个很好的例子。"
    assert find_loop(LOOPS["chinese_short_unit"]).unit == "的"
    assert find_loop("„Nein, nein, nein, nein, nein, nein.").unit == "nein, "  # turned to start at a word
    assert find_loop(LOOPS["varying"]).kind == "low_diversity"


@pytest.mark.parametrize("text", NORMAL)
def test_normal_text_is_not_a_loop(text):
    assert find_loop(text) is None


def test_cjk_counts_double_width():
    assert width("的的的") == 6 and width("abc") == 3
    assert find_loop("的" * 10) is not None and find_loop("a" * 10) is None  # 20 columns vs 10


def test_flores_references_in_every_script_are_not_loops():
    langs = sorted(p.name for p in FLORES.glob("*.dev"))
    assert len(langs) >= 38
    for name in langs:
        lines = read_lines(FLORES / name)[:80]
        flagged = [x for x in lines if find_loop(x)]
        assert not flagged, f"{name}: {flagged[:2]}"


def test_metric_rate_sentences_and_details():
    hyps = [LOOPS["swahili"], LOOPS["chinese"], *NORMAL[:6]]
    res = _score(hyps)
    assert res.name == "repetition" and res.score == pytest.approx(25.0)
    assert res.sentence_scores == [1.0, 1.0] + [0.0] * 6
    assert res.details["looping"] == 2 and res.details["hypotheses"] == 8 and res.details["excused"] == 0
    assert [e["unit"] for e in res.details["examples"]] == ["ya kwanza ", "这是一个很好的例子。"]
    assert res.details["examples"][0]["index"] == 0 and res.details["kinds"] == {"tandem": 2}
    assert res.signature.startswith("repetition|") and res.signature.endswith("unit:% of hypotheses")
    m = get_metric("repetition")
    assert m.higher_is_better is False and m.needs_references is False
    assert _score(hyps, sentence_level=False).sentence_scores is None
    assert _score(NORMAL).score == 0.0


def test_a_faithful_translation_of_a_repetitive_source_is_excused():
    """NTREX-128 has a quote "No, no, no, no, no.": every translation of it repeats, and none is a loop."""
    ntrex = data_root() / "ntrex128"
    en = read_lines(ntrex / "eng_Latn.txt")
    i = next(k for k, line in enumerate(en) if line.startswith('"No, no, no'))
    hyps = [read_lines(ntrex / f"{lang}.txt")[i] for lang in ("deu_Latn", "hin_Deva", "jpn_Jpan", "swh_Latn")]
    assert all(find_loop(h) for h in hyps)  # they do repeat ...
    res = _score(hyps, [en[i]] * len(hyps))
    assert res.score == 0.0 and res.details["excused"] == 4  # ... as the source does
    runaway = _score(["Hapana, " * 30], [en[i]])  # far more copies than the source has
    assert res.details["excused"] == 4 and runaway.score == 100.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_distinct_real_words_never_loop(data):
    words = sorted({w for line in read_lines(FLORES / "eng_Latn.dev")[:60] for w in line.split()})
    picked = data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=60, unique=True))
    assert find_loop(" ".join(picked)) is None


@settings(max_examples=60, deadline=None)
@given(prefix=st.sampled_from(read_lines(FLORES / "eng_Latn.dev")[:20]),
       unit=st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=40), extra=st.integers(0, 5))
def test_a_unit_repeated_to_the_end_always_loops(prefix, unit, extra):
    copies = max(3, -(-MIN_WIDTH // width(unit))) + extra  # at least 3 copies and 20 columns
    loop = find_loop(f"{prefix} {unit * copies}")
    assert loop is not None and loop.copies >= 3


def test_reports_treat_it_as_a_rate():
    assert "repetition" in LOWER_IS_BETTER and fmt("repetition", 12.345) == "12.3"
    res = _score([LOOPS["swahili"], "Habari za asubuhi."])
    row = {"system": "s", "direction": "en-sw", "groups": ["en->X"], "resource": "low", "segments": 2,
           "scores": {"repetition": res.score}, "details": {"repetition": res.details}}
    head, body = repetition_table({"rows": [row]})
    assert head[2] == "looping" and body == [["s", "en-sw", "1", "2", "0", "“ya kwanza” ×6.7"]]
    pooled = next(a for a in aggregate([row, {**row, "direction": "sw-en"}]) if a["by"] == "all")
    assert pooled["repetition_pooled"] == {"rate": 50.0, "looping": 2, "hypotheses": 4}


# ---- the decoding knob ----------------------------------------------------------------------------------------


def test_repetition_penalty_is_off_by_default_and_validated():
    assert GenerationSettings().repetition_penalty == 1.0
    assert GenerationSettings(repetition_penalty=1.2).repetition_penalty == 1.2
    for bad in (0, -1, "x"):
        with pytest.raises(ValidationError, match="repetition_penalty"):
            GenerationSettings(repetition_penalty=bad)


@pytest.mark.parametrize("api", ["chat", "translate"])
def test_endpoint_requests_name_the_penalty(api):
    """Sent even when off: a server default (xalign serve's 1.1) must not change what is measured."""
    row = {"idx": 0, "direction": "en-de", "src": "en", "tgt": "de", "source": "Hello.", "style": "chat"}
    for value in (1.0, 1.3):
        client = EndpointClient(EndpointSettings(url="http://127.0.0.1:9", api=api),
                                GenerationSettings(repetition_penalty=value))
        client.model = "m"
        path, body = client._request(row)
        assert path == {"chat": "/v1/chat/completions", "translate": "/v1/translate"}[api]
        assert body["repetition_penalty"] == value
    few = {**row, "style": "few_shot", "few_shot": "English: Hello.\nGerman:"}
    client = EndpointClient(EndpointSettings(url="http://127.0.0.1:9"), GenerationSettings(repetition_penalty=1.3))
    client.model = "m"
    assert client._request(few)[1]["repetition_penalty"] == 1.3


def test_resume_checkpoints_pin_the_penalty_only_when_on():
    """Checkpoints made before the setting existed (penalty off) stay resumable; a changed penalty is refused."""
    recipe = EvalRecipe(name="u", test_set={"format": "flores200", "path": str(FLORES)}, directions=["en-de"])
    ident = {"name": "m"}
    assert "repetition_penalty" not in setup(recipe, ident)["sampling"]
    on = recipe.model_copy(update={"generation": GenerationSettings(repetition_penalty=1.2)})
    assert setup(on, ident)["sampling"]["repetition_penalty"] == 1.2 and setup(on, ident) != setup(recipe, ident)
