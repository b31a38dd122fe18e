"""The policy to train (base model, optionally wrapped with LoRA) and, for full-model DPO, its frozen reference."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from pipelines.train.recipe import TrainRecipe


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _zero3_context(ds_config: dict[str, Any] | None):
    """Under ZeRO-3, let transformers create the weights already partitioned (no full copy per rank)."""
    if not ds_config or ds_config.get("zero_optimization", {}).get("stage") != 3:
        return nullcontext(None)
    from transformers.integrations import HfDeepSpeedConfig

    return nullcontext(HfDeepSpeedConfig(ds_config))  # must stay referenced while loading


def load_base(recipe: TrainRecipe, model_dir: Path, ds_config: dict[str, Any] | None = None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with _zero3_context(ds_config) as _hf_ds:  # kept alive (referenced) while from_pretrained runs
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch_dtype(recipe.model.dtype), attn_implementation=recipe.model.attn_implementation,
        )
    model.config.use_cache = False
    return model


def trainable_token_ids(model_dir: Path, tokens: list[str]) -> list[int]:
    """Ids of single-token strings; a string the tokenizer splits or does not know is a recipe error."""
    if not tokens:
        return []
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for text in tokens:
        found = tok.convert_tokens_to_ids(text)
        if found is None or found == tok.unk_token_id:
            raise ValueError(f"lora.trainable_tokens: {text!r} is not a single token of {model_dir.name}'s tokenizer")
        ids.append(int(found))
    return ids


def build_policy(recipe: TrainRecipe, model_dir: Path, ds_config: dict[str, Any] | None = None) -> torch.nn.Module:
    model = load_base(recipe, model_dir, ds_config)
    if recipe.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.lora is not None:
        from peft import LoraConfig, get_peft_model

        if recipe.model.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
        cfg = LoraConfig(
            r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules), task_type="CAUSAL_LM", bias="none",
            trainable_token_indices=trainable_token_ids(model_dir, recipe.lora.trainable_tokens) or None,
        )
        model = get_peft_model(model, cfg)
    return model


def build_reference(recipe: TrainRecipe, model_dir: Path, ds_config: dict[str, Any]) -> torch.nn.Module | None:
    """Full-model DPO: a frozen copy of the base (ZeRO-3: partitioned by an optimizer-less engine).

    LoRA DPO needs none: the policy with its adapters disabled is the base model.
    """
    if recipe.method != "dpo" or recipe.lora is not None:
        return None
    ref = load_base(recipe, model_dir, ds_config)
    ref.requires_grad_(False)
    ref.eval()
    if ds_config["zero_optimization"]["stage"] == 3:
        import deepspeed

        cfg = {
            "train_micro_batch_size_per_gpu": ds_config["train_micro_batch_size_per_gpu"],
            "zero_optimization": {"stage": 3},
            "bf16": ds_config["bf16"],
        }
        engine, *_ = deepspeed.initialize(model=ref, config=cfg)
        engine.eval()
        return engine
    return ref


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts; ZeRO-3 partitions report their full size as ds_numel."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable
