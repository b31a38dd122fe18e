"""Tiny Llama-architecture models with a locally trained tokenizer, built in seconds.

Tests, benchmarks and CI run every real engine (DeepSpeed, vLLM, Ray Serve) on these, since nothing
can be downloaded from a model hub. The tokenizer is byte-level BPE trained on whatever text is
given (the shared parallel data by default), with xalign's chat template attached.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from cluster import models
from cluster.locations import data_root

_FALLBACK_TEXT = (
    "Translate the following text from English into German. The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Bonjour le monde. Hola mundo.",
    "请将下面的英文文本翻译成中文。你好，世界。Привет, мир. こんにちは世界。",
)


def corpus_lines(limit_per_file: int = 300) -> list[str]:
    """Text to train the tiny tokenizer on: NTREX lines from a few scripts, else a built-in sample."""
    root = data_root(required=False)
    lines: list[str] = list(_FALLBACK_TEXT)
    if root is not None:
        for code in ("eng_Latn", "deu_Latn", "zho_Hans", "rus_Cyrl", "fra_Latn", "swh_Latn", "jpn_Jpan"):
            f = root / "ntrex128" / f"{code}.txt"
            if f.is_file():
                with f.open(encoding="utf-8") as fh:
                    lines.extend(line.strip() for _, line in zip(range(limit_per_file), fh))
    return lines


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from cluster import prompts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<bos>", "<eos>", "<unk>", *prompts.SPECIAL_TOKENS]
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) if texts is not None else corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=list(prompts.SPECIAL_TOKENS),
    )
    models.attach_chat_template(fast)
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=max(1, hidden_size // 32),
        num_key_value_heads=max(1, hidden_size // 32), head_dim=32, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    models.write_generation_config(out, fast)
    (out / models.MARKER).write_text(json.dumps({"name": "tiny-llama", "source": "built locally", "seed": seed}))
    return out
