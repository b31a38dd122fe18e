"""Hugging Face export of a trained policy: `model/` (full or LoRA-merged; safetensors, tokenizer with
the chat template used in training, generation config), `adapter/` for LoRA (a peft folder vLLM's LoRA
support loads), and `lineage.json` (dataset, recipe, base model, step, run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipelines.train.model import torch_dtype
from pipelines.train.recipe import TrainRecipe


def export_dtype(recipe: TrainRecipe) -> torch.dtype:
    return torch_dtype(recipe.model.dtype if recipe.export.dtype == "auto" else recipe.export.dtype)


def full_state_dict(engine, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The complete weights on rank 0 (None elsewhere). Collective under ZeRO-3: every rank must call it."""
    if zero_stage == 3:
        sd = engine._zero3_consolidated_16bit_state_dict()  # gathers the partitions; rank 0 gets them all
        return sd if engine.global_rank == 0 else None
    return engine.module.state_dict() if engine.global_rank == 0 else None


def _save_tokenizer(model_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    from cluster.models import attach_chat_template, write_generation_config

    tok = AutoTokenizer.from_pretrained(model_dir)
    attach_chat_template(tok)  # the template training rendered with, whatever the base shipped
    tok.save_pretrained(out)
    write_generation_config(out, tok)


def export(engine, recipe: TrainRecipe, base_dir: Path, out: Path, zero_stage: int, lineage: dict[str, Any]) -> None:
    """Collective: all ranks call it; rank 0 writes `out/`."""
    sd = full_state_dict(engine, zero_stage)
    if engine.global_rank != 0:
        return
    dtype = export_dtype(recipe)
    sd = {k: v.detach().to("cpu", dtype) for k, v in sd.items()}
    out.mkdir(parents=True, exist_ok=True)
    module = engine.module
    if recipe.lora is None:
        module.config.dtype = dtype
        module.save_pretrained(out / "model", state_dict=sd, safe_serialization=True)
        _save_tokenizer(base_dir, out / "model")
    else:
        module.save_pretrained(out / "adapter", state_dict=sd, safe_serialization=True)
        if recipe.export.merge_lora:
            merged = merge_adapter(base_dir, out / "adapter", dtype)
            merged.save_pretrained(out / "model", safe_serialization=True)
            _save_tokenizer(base_dir, out / "model")
    (out / "lineage.json").write_text(json.dumps(lineage, indent=2))


def merge_adapter(base_dir: Path, adapter_dir: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The base with the saved adapter folded in: exactly what serving the adapter computes."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
