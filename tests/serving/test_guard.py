"""The off-target guard on its own, without Ray or an engine: real language ID (cluster.langid) decides the
verdicts, and the retry conversations are built by the shared prompt module (cluster.prompts).
"""

from __future__ import annotations

import pytest

from cluster import prompts
from serving import guard

FOX = "The quick brown fox jumps over the lazy dog."
DE = "Der schnelle braune Fuchs springt über den faulen Hund."
FR = "Le renard brun rapide saute par-dessus le chien paresseux."
JA = "素早い茶色の狐がのろまな犬を飛び越える。"
EL = "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο."  # Greek: not in the language table


@pytest.mark.parametrize(("text", "target", "label"), [
    (FR, "fra_Latn", "fra_Latn"),
    (DE, "deu_Latn", "deu_Latn"),
    (JA, "jpn_Jpan", "jpn_Jpan"),
    (FOX, "eng_Latn", "eng_Latn"),
])
def test_right_language_passes(text: str, target: str, label: str):
    v = guard.check(text, target)
    assert v.on_target is True and v.off_target is False
    assert v.label == label and v.detection is not None and v.detection.confidence > 0.5


@pytest.mark.parametrize(("text", "target", "label"), [
    (DE, "fra_Latn", "deu_Latn"),  # a neighbouring Latin-script language
    (FOX, "jpn_Jpan", "eng_Latn"),  # the source echoed back
    (FR, "deu_Latn", "fra_Latn"),
])
def test_wrong_language_is_flagged(text: str, target: str, label: str):
    v = guard.check(text, target)
    assert v.on_target is False and v.off_target is True
    assert v.label == label


def test_language_outside_the_table_reports_the_identifiers_label():
    v = guard.check(EL, "fra_Latn")
    assert v.off_target is True
    assert v.detection is not None and v.detection.flores is None and v.label == "el"


def test_target_only_the_fallback_identifier_knows():
    """Wolof is judged by pycld2 (py3langid lacks it): French text is still caught as off-target."""
    assert guard.check(FR, "wol_Latn").off_target is True


@pytest.mark.parametrize("text", ["OK", "12345 !!", "", "ja."])
def test_too_short_to_judge_is_undetermined_not_flagged(text: str):
    v = guard.check(text, "deu_Latn")
    assert v.on_target is None and v.off_target is None
    assert v.detection is None and v.label is None


def test_strict_retry_reasks_the_first_turn_with_the_strict_instruction():
    first = prompts.translation_messages("eng_Latn", "fra_Latn", FOX)
    system = {"role": "system", "content": "You are a translator."}
    messages, used = guard.retry_messages([system, *first], DE, "fra_Latn", "strict",
                                          guard.FirstTurn("eng_Latn", FOX))
    assert used == "strict"
    # The bad answer is not shown; the user turn is replaced, whatever came before it is kept.
    assert messages == [system, *prompts.translation_messages("eng_Latn", "fra_Latn", FOX, strict=True)]
    # The strict sentence goes first, so the template's closing "French:" cue is still what the model reads last.
    assert messages[-1]["content"].startswith(
        "Answer only with the French translation, written in French, and nothing else.\n\n")
    assert messages[-1]["content"].endswith("\nFrench:")


def _turns(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def test_follow_up_turn_always_falls_back_to_fix():
    """A follow-up carries no FirstTurn (its instruction is the user's own): even `strict` shows the model its
    answer and asks for the target language only."""
    convo = [*prompts.translation_messages("eng_Latn", "fra_Latn", FOX), {"role": "assistant", "content": FR},
             {"role": "user", "content": prompts.follow_up("formal", "fra_Latn")}]
    messages, used = guard.retry_messages(convo, DE, "fra_Latn", "strict", None)
    assert used == "fix"
    assert _turns(messages) == [*_turns(convo), ("assistant", DE),
                                ("user", "That answer is not in French. Translate the text into French only.")]
    assert convo[-1]["role"] == "user" and len(convo) == 3  # the job's own conversation is not modified


def test_fix_strategy_on_a_fresh_translation():
    first = prompts.translation_messages("eng_Latn", "jpn_Jpan", FOX)
    messages, used = guard.retry_messages(first, DE, "jpn_Jpan", "fix", guard.FirstTurn("eng_Latn", FOX))
    assert used == "fix"
    assert messages == [*first, {"role": "assistant", "content": DE},
                        {"role": "user", "content": prompts.follow_up("fix", "jpn_Jpan")}]
