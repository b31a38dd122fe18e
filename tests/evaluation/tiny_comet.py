"""Build a tiny COMET checkpoint offline (run under `.venv-comet`'s interpreter, not the main one).

A 2-layer XLM-R config with a Unigram tokenizer trained here, wrapped in comet's `RegressionMetric`
(`load_pretrained_weights=False`) and saved by a Lightning trainer as `checkpoints/model.ckpt` with
`hparams.yaml` beside it: the layout `comet.load_from_checkpoint` expects from a downloaded model.

    .venv-comet/bin/python tests/evaluation/tiny_comet.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

TEXT = [
    "The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.", "敏捷的棕色狐狸跳过了懒狗。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.", "Mbweha wa kahawia mwepesi anaruka juu ya mbwa mvivu.",
]


def build(out: Path, seed: int = 0) -> Path:
    import pytorch_lightning as pl
    import torch
    import yaml
    from comet.models import RegressionMetric
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    encoder = out / "encoder"
    encoder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(TEXT * 20, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                            special_tokens=[("<s>", bos), ("</s>", eos)])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(encoder)
    XLMRobertaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, pad_token_id=fast.pad_token_id,
                     bos_token_id=bos, eos_token_id=eos).save_pretrained(encoder)

    torch.manual_seed(seed)
    model = RegressionMetric(pretrained_model=str(encoder), load_pretrained_weights=False, hidden_sizes=[32],
                             local_files_only=True)
    trainer_pl = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False)
    trainer_pl.strategy.connect(model)
    (out / "checkpoints").mkdir(exist_ok=True)
    trainer_pl.save_checkpoint(out / "checkpoints" / "model.ckpt")
    (out / "hparams.yaml").write_text(yaml.safe_dump(dict(model.hparams)))
    return out / "checkpoints" / "model.ckpt"


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
