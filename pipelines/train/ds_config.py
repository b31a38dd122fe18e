"""The DeepSpeed config, generated from a train recipe (never hand-written per run)."""

from __future__ import annotations

import copy
from typing import Any

from pipelines.train.recipe import TrainRecipe


def use_deepspeed_optimizer(recipe: TrainRecipe) -> bool:
    """DeepSpeed's own AdamW on GPU or with offload; torch's AdamW on CPU (DeepSpeed's CPU ops are JIT-built)."""
    if recipe.optimizer.impl != "auto":
        return recipe.optimizer.impl == "deepspeed"
    return recipe.scaling.use_gpu or recipe.deepspeed.offload_optimizer


def warmup_steps(recipe: TrainRecipe, total_steps: int) -> int:
    if recipe.schedule.warmup_steps is not None:
        return min(recipe.schedule.warmup_steps, total_steps)
    return min(int(recipe.schedule.warmup_ratio * total_steps), total_steps)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deepspeed_config(recipe: TrainRecipe, total_steps: int) -> dict[str, Any]:
    """ZeRO stage, offload, precision, batch split, clipping and a linear-warmup + cosine schedule."""
    ds = recipe.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 2:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True)
    if ds.zero_stage == 3:
        # Every rank must join the gather of the partitioned weights before rank 0 saves them.
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": recipe.scaling.use_gpu}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": recipe.scaling.use_gpu}

    warmup = warmup_steps(recipe, total_steps)
    # WarmupCosineLR counts iterations from 0 and needs >= 2 warmup steps; a ratio of 1 at the
    # warmup floor is how "no warmup" is expressed.
    scheduler = {
        "type": "WarmupCosineLR",
        "params": {
            "total_num_steps": max(total_steps, 1),
            "warmup_num_steps": max(warmup, 1),
            "warmup_min_ratio": 0.0 if warmup > 0 else 1.0,
            "warmup_type": "linear",
            "cos_min_ratio": recipe.schedule.min_lr_ratio,
        },
    }
    cfg: dict[str, Any] = {
        "train_batch_size": recipe.batch.global_batch_size,
        "train_micro_batch_size_per_gpu": recipe.batch.micro_batch_size,
        "gradient_accumulation_steps": recipe.grad_accum,
        "gradient_clipping": recipe.training.gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": recipe.model.dtype == "bfloat16"},
        "fp16": {"enabled": False},
        "scheduler": scheduler,
        "steps_per_print": 10**9,  # xalign logs its own metrics
        "wall_clock_breakdown": False,
        "seed": recipe.training.seed,
    }
    if use_deepspeed_optimizer(recipe):
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": recipe.optimizer.lr, "betas": list(recipe.optimizer.betas), "eps": recipe.optimizer.eps,
                "weight_decay": recipe.optimizer.weight_decay,
            },
        }
    else:
        # A torch optimizer passed to deepspeed.initialize: allowed explicitly, and kept on the
        # CPU optimizer path without DeepSpeedCPUAdam when offloading.
        cfg["zero_allow_untested_optimizer"] = True
        cfg["zero_force_ds_cpu_optimizer"] = False
    return _deep_merge(cfg, ds.overrides)
