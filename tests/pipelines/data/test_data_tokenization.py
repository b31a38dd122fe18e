"""Tokenization through cluster.prompts: template round trip, label masking, preference ids, length."""

import json

import pytest
from tokenizer_checks import assert_same_ids_as_transformers
from transformers import AutoTokenizer

from cluster import prompts
from cluster.tokenizer import load_tokenizer, tokenizer_identity
from pipelines.data.schema import new_record, to_table
from pipelines.data.tokenization import tokenize_rows, tokenize_table

CONV = [{"role": "user", "content": prompts.translation_instruction("en", "de", "Good morning!")},
        {"role": "assistant", "content": "Guten Morgen!"},
        {"role": "user", "content": prompts.follow_up("retarget", "fr")},
        {"role": "assistant", "content": "Bonjour !"}]


def test_sft_round_trip_and_label_mask(tiny_model):
    tok = load_tokenizer(tiny_model)
    row = tokenize_rows(tok, [new_record(sample_id="a", kind="sft", messages=CONV)], 512)[0]
    ids, labels = list(row["input_ids"]), list(row["labels"])
    assert tok.decode(ids) == prompts.render_text(CONV, tok.bos_token)  # decode(tokens) == rendered text
    answers = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert answers == f"Guten Morgen!{prompts.END}Bonjour !{prompts.END}"
    assert row["num_tokens"] == len(ids) and labels[0] == -100
    assert AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(CONV, tokenize=False) == tok.decode(ids)


def test_preference_ids(tiny_model):
    tok = load_tokenizer(tiny_model)
    prompt = CONV[:1]
    row = tokenize_rows(tok, [new_record(sample_id="p", kind="dpo", messages=prompt, chosen="Guten Morgen!",
                                         rejected="Good morning!")], 512)[0]
    assert list(row["prompt_ids"]) == prompts.encode_prompt(tok, prompt)
    assert tok.decode(row["chosen_ids"]) == f"Guten Morgen!{prompts.END}"
    assert tok.decode(row["rejected_ids"]) == f"Good morning!{prompts.END}"
    full = prompts.encode(tok, [*prompt, {"role": "assistant", "content": "Guten Morgen!"}])[0]
    assert full[: len(row["prompt_ids"]) + len(row["chosen_ids"])] == [*row["prompt_ids"], *row["chosen_ids"]]


def test_too_long_is_rejected_not_truncated(tiny_model):
    tok = load_tokenizer(tiny_model)
    rows = tokenize_rows(tok, [new_record(sample_id="a", kind="sft", messages=CONV),
                               new_record(sample_id="b", kind="sft", messages=CONV, reject_reason="too_short")], 10)
    assert rows[0]["reject_reason"] == "too_long_tokens" and rows[0]["input_ids"] is None
    assert "> max_seq_len 10" in rows[0]["reject_detail"]
    assert rows[1]["input_ids"] is None and rows[1]["reject_reason"] == "too_short"  # rejects pass through


def test_tokenizer_identity_and_marker_check(tiny_model, tmp_path):
    ident = tokenizer_identity(tiny_model)
    assert ident["name"] == "tiny-llama" and len(ident["tokenizer_sha256"]) == 64
    auto = AutoTokenizer.from_pretrained(tiny_model)
    assert ident["end_of_turn_id"] == auto.convert_tokens_to_ids(prompts.END)
    assert (ident["vocab_size"], ident["bos_token_id"]) == (len(auto), auto.bos_token_id)
    # a tokenizer without xalign's turn markers is refused
    cfg = json.loads((tiny_model / "tokenizer_config.json").read_text())
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=cfg.get("bos_token"))
    vocab = raw.get_vocab()
    assert prompts.END in vocab  # the markers are in the trained vocabulary...
    plain.save_pretrained(tmp_path)
    text = (tmp_path / "tokenizer.json").read_text()
    (tmp_path / "tokenizer.json").write_text(text.replace('"special": true', '"special": false'))
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in prompts.SPECIAL_TOKENS]
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if k not in prompts.SPECIAL_TOKENS}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="does not have '<start_of_turn>' as one token"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="does not have '<start_of_turn>' as one token"):
        tokenizer_identity(tmp_path)


def test_token_ids_digest_survives_a_resaved_tokenizer(tiny_model, tmp_path):
    """A fine-tuned export re-serializes its tokenizer (other bytes, another chat template) but encodes every text to
    the same ids: the token-id digest is equal where the files' hash is not, and only a real change moves it."""
    auto = AutoTokenizer.from_pretrained(tiny_model)
    auto.chat_template = "{{ messages[0]['content'] }}"
    auto.save_pretrained(tmp_path / "export")
    ours, theirs = tokenizer_identity(tiny_model), tokenizer_identity(tmp_path / "export")
    assert theirs["tokenizer_sha256"] != ours["tokenizer_sha256"]
    assert theirs["token_ids_sha256"] == ours["token_ids_sha256"]
    data = json.loads((tmp_path / "export" / "tokenizer.json").read_text())
    data["model"]["vocab"]["zzz-new-token"] = len(data["model"]["vocab"])
    (tmp_path / "export" / "tokenizer.json").write_text(json.dumps(data))
    assert tokenizer_identity(tmp_path / "export")["token_ids_sha256"] != ours["token_ids_sha256"]


def test_segment_encoder_gives_transformers_ids(tiny_model):
    """The pipeline tokenizes with `tokenizers` alone; training and serving load transformers' tokenizer."""
    assert_same_ids_as_transformers(tiny_model)
    with pytest.raises(ValueError, match="segments only"):
        load_tokenizer(tiny_model).encode("x", add_special_tokens=True)


def test_tokenize_table_equals_tokenize_rows(tiny_model):
    """The Ray actor replaces only the columns tokenizing writes; every other column passes through."""
    tok = load_tokenizer(tiny_model)
    rows = [new_record(sample_id="a", kind="sft", messages=CONV, minhash=[1, 2, 3], source_index=4),
            new_record(sample_id="b", kind="sft", messages=CONV, reject_reason="too_short", reject_stage="length"),
            new_record(sample_id="c", kind="dpo", messages=CONV[:1], chosen="Guten Morgen!", rejected="Good morning!"),
            new_record(sample_id="d", kind="sft", messages=CONV * 8)]
    limit = len(prompts.encode(tok, CONV)[0]) + 1
    table = tokenize_table(tok, to_table([dict(r) for r in rows]), limit)
    expected = to_table(tokenize_rows(tok, [dict(r) for r in rows], limit))
    assert table.equals(expected)
    got = {r["sample_id"]: r for r in table.to_pylist()}
    assert got["a"]["input_ids"] and got["a"]["minhash"] is None and got["a"]["source_index"] == 4
    assert got["b"]["reject_reason"] == "too_short" and got["c"]["chosen_ids"]
    assert got["d"]["reject_reason"] == "too_long_tokens"
