"""The data pipeline's `SegmentEncoder` against transformers' tokenizer: the same ids, or training would see
other tokens than serving."""

from transformers import AutoTokenizer

from cluster import prompts
from cluster.locations import data_root
from cluster.tokenizer import SegmentEncoder, load_tokenizer

CONV = [{"role": "user", "content": prompts.translation_instruction("en", "de", "Good morning!")},
        {"role": "assistant", "content": "Guten Morgen!"},
        {"role": "user", "content": "再见 👋"}]


def segment_texts() -> list[str]:
    """Segments as the chat template cuts them, over many scripts, plus whitespace and marker edge cases."""
    texts = ["", " ", "  two leading", "tab\tand\nnewline\n\n", "trailing ", "emoji 🙂 and ✓", "x" * 300,
             f"{prompts.START}user\nHallo{prompts.END}\n", f"inline {prompts.END} marker", "\n"]
    for f in sorted((data_root() / "ntrex128").glob("*_*.txt")):  # 128 languages, many scripts
        with open(f, encoding="utf-8") as fh:
            texts += [next(fh).rstrip("\n") for _ in range(3)]
    return texts


def assert_same_ids_as_transformers(model_dir) -> None:
    enc, auto = load_tokenizer(model_dir), AutoTokenizer.from_pretrained(model_dir)
    assert isinstance(enc, SegmentEncoder) and (enc.bos_token, enc.bos_token_id) == (auto.bos_token, auto.bos_token_id)
    texts = segment_texts()
    assert len(texts) > 100
    for text in texts:
        assert enc.encode(text) == auto.encode(text, add_special_tokens=False), text
    assert prompts.encode(enc, CONV) == prompts.encode(auto, CONV)
