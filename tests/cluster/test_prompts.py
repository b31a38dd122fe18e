import pytest
from transformers import AutoTokenizer

from cluster import prompts

CONV = [
    {"role": "system", "content": "You are a translator."},
    {"role": "user", "content": prompts.translation_instruction("en", "de", "Good morning!")},
    {"role": "assistant", "content": "Guten Morgen!"},
    {"role": "user", "content": prompts.follow_up("retarget", "fr")},
    {"role": "assistant", "content": "Bonjour !"},
]


def test_template_matches_renderer(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tok.apply_chat_template(CONV, tokenize=False) == prompts.render_text(CONV, tok.bos_token)
    gen = tok.apply_chat_template(CONV[:2], tokenize=False, add_generation_prompt=True)
    assert gen == prompts.render_text(CONV[:2], tok.bos_token, add_generation_prompt=True)


def test_encode_round_trip_and_masking(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids, labels = prompts.encode(tok, CONV)
    assert tok.decode(ids) == prompts.render_text(CONV, tok.bos_token)
    assert ids == tok(prompts.render_text(CONV, tok.bos_token), add_special_tokens=False)["input_ids"]
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert trained == f"Guten Morgen!{prompts.END}Bonjour !{prompts.END}"


def test_prompt_ends_with_model_turn(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = prompts.encode_prompt(tok, CONV[:2])
    assert tok.decode(ids).endswith(f"{prompts.START}model\n")


def test_instruction_names_languages():
    text = prompts.translation_instruction("swh_Latn", "zh", "Habari")
    assert "Swahili" in text and "Chinese" in text and "Habari" in text
    assert "only with the Chinese" in prompts.translation_instruction("sw", "zh", "x", strict=True)
    for i in range(len(prompts.TRANSLATION_TEMPLATES)):
        assert "Habari" in prompts.translation_instruction("sw", "de", "Habari", template=i)


def test_bad_messages_name_field():
    with pytest.raises(ValueError, match=r"messages\[0\]\.role"):
        prompts.render_text([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[1\]\.content"):
        prompts.render_text([{"role": "user", "content": "x"}, {"role": "assistant", "content": 3}])
    with pytest.raises(ValueError, match="follow-up kind"):
        prompts.follow_up("louder", "de")
