"""The `xalign train` recipe: one validated model for SFT (full or LoRA), DPO and GRPO on Ray Train + DeepSpeed.

Sections follow torchtune's layout (model, data, optimizer, schedule, batch, ...), so a paper setup
(BayLing 2: global batch 128, lr 2e-5, ZeRO-3, bf16, 8 GPUs) and its CPU miniature differ only in values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.config import Strict
from pipelines.train.rewards.settings import RewardSettings


class ModelSection(Strict):
    base: str = "default"  # anything cluster.models.resolve_model accepts
    # Training precision. bf16 is DeepSpeed's bf16 mode (fp32 master weights and optimizer state); auto picks
    # bf16 where the worker's hardware multiplies bf16 natively (AMX or AVX-512 BF16 CPU, bf16 GPU), else fp32
    # (cluster.hardware).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class LoraSection(Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # Tokens whose embedding rows are trained too (peft trainable tokens), e.g. chat markers a base model never
    # saw: Gemma 3 base's <end_of_turn> sits in a cluster of ~6k untrained rows (cosine 0.995), so LoRA alone
    # cannot make the model pick it and answers never end. Needs export.merge_lora (vLLM LoRA loads no rows).
    trainable_tokens: list[str] = Field(default_factory=list)


class DpoSection(Strict):
    beta: float = Field(0.1, gt=0)
    # RPO (TRL's rpo_alpha): add this weight times the chosen answers' per-token NLL. Without it, LoRA DPO on
    # easy cross-lingual pairs ran to a reward margin of 14 and traded faithful translations for fluent
    # inventions (docs/RESULTS.md); 0 = plain DPO.
    sft_weight: float = Field(0.0, ge=0)


class GrpoSection(Strict):
    """GRPO (method: grpo): rollouts from a vLLM engine, translation rewards, the clipped policy gradient."""

    group_size: int = Field(4, ge=2)  # completions sampled per prompt; advantages are relative within the group
    max_new_tokens: int = Field(96, gt=0)
    temperature: float = Field(1.0, gt=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    clip_eps: float = Field(0.2, gt=0, lt=1)
    kl_beta: float = Field(0.04, ge=0)  # KL penalty to the reference (the base under the adapters); 0 = off
    scale_rewards: bool = True  # divide by the group's std (GRPO); false: only centre (Dr. GRPO)
    rewards: RewardSettings = Field(default_factory=RewardSettings)
    # The rollout engine (a vLLM actor). Colocated by default: it holds no CPU of its own and takes turns with the
    # learner; on a GPU cluster give it its own resources.
    engine_cpus: float = Field(0.0, ge=0)
    engine_gpus: float = Field(0.0, ge=0)
    kv_cache_gib: float = Field(1.0, gt=0)
    max_model_len: int = Field(512, gt=16)


class DataSection(Strict):
    path: str = "outputs/data/latest"  # a dataset folder written by `xalign prepare` (manifest.json, sft/, dpo/)
    # Fixed read parallelism: the split across workers must not depend on the cluster's size, or a
    # resumed run would see a different data order.
    read_blocks: int = Field(8, gt=0)
    shuffle_buffer_rows: int = Field(0, ge=0)  # per-worker local shuffle, reseeded each epoch; 0 = shard order
    verify_checksums: bool = False  # re-hash every shard against the manifest before training (reads them all)


class OptimizerSection(Strict):
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    # torch: torch.optim.AdamW handed to DeepSpeed (no JIT-built ops; the CPU default).
    # deepspeed: DeepSpeed builds its own AdamW (FusedAdam on GPU, CPUAdam when offloading).
    impl: Literal["auto", "torch", "deepspeed"] = "auto"


class ScheduleSection(Strict):
    warmup_steps: int | None = Field(None, ge=0)  # wins over warmup_ratio when set
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine ends at lr * min_lr_ratio


class BatchSection(Strict):
    global_batch_size: int = Field(128, gt=0)  # sequences (SFT rows / DPO pairs) per optimizer step
    micro_batch_size: int = Field(4, gt=0)  # per worker and forward pass
    max_seq_len: int | None = Field(None, gt=0)  # None: the dataset's max_seq_len (manifest)


class TrainingSection(Strict):
    epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0)  # stop earlier than `epochs` would
    seed: int = 0
    gradient_clipping: float = Field(1.0, ge=0)  # 0 = off


class DeepSpeedSection(Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only
    overrides: dict[str, Any] = Field(default_factory=dict)  # merged last into the generated DeepSpeed config


class ScalingSection(Strict):
    num_workers: int = Field(2, gt=0)
    use_gpu: bool = False
    # Fractional CPUs leave room for Ray Data's read tasks (a worker holding a whole CPU on a small
    # cluster starves the reads: Ray Train then waits forever on a "backpressured" dataset).
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)
    torch_threads: int | None = Field(None, gt=0)  # None: max(1, round(cpus_per_worker))
    # Custom Ray resources each worker also needs: `{xalign-worker: 1}` on a cluster whose worker nodes carry one
    # each (`xalign cluster up --workers N`, or a KubeRay worker group's rayStartParams) puts one worker per node.
    resources: dict[str, float] = Field(default_factory=dict)


class CheckpointSection(Strict):
    every_steps: int = Field(50, gt=0)
    num_to_keep: int | None = Field(2, gt=0)
    storage: str | None = None  # None: the run folder; or any pyarrow URI (s3://, gs://, file://, ...)


class RunSection(Strict):
    output_dir: str = "outputs/runs"
    name: str | None = None  # run id; None: <recipe name>-<timestamp>
    max_failures: int = Field(0, ge=-1)  # Ray Train restarts from the latest checkpoint this many times
    log_every: int = Field(1, gt=0)


class ExportSection(Strict):
    enabled: bool = True
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: the training dtype
    merge_lora: bool = True  # LoRA: also write the merged model to export/model/


class MetricsSection(Strict):
    # Peak dense FLOP/s per worker for the MFU estimate; None: looked up for known GPUs, else MFU is null.
    peak_tflops_per_worker: float | None = Field(None, gt=0)


class TrainRecipe(Strict):
    kind: Literal["train"] = "train"
    name: str = "train"
    description: str = ""
    method: Literal["sft", "dpo", "grpo"] = "sft"
    model: ModelSection = Field(default_factory=ModelSection)
    lora: LoraSection | None = None  # set: LoRA (peft) on the frozen base; None: full fine-tuning
    dpo: DpoSection = Field(default_factory=DpoSection)
    grpo: GrpoSection = Field(default_factory=GrpoSection)
    data: DataSection = Field(default_factory=DataSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    batch: BatchSection = Field(default_factory=BatchSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    run: RunSection = Field(default_factory=RunSection)
    export: ExportSection = Field(default_factory=ExportSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainRecipe:
        per_pass = self.batch.micro_batch_size * self.scaling.num_workers
        if self.batch.global_batch_size % per_pass:
            raise ValueError(
                f"batch.global_batch_size ({self.batch.global_batch_size}) must be a multiple of "
                f"batch.micro_batch_size x scaling.num_workers ({self.batch.micro_batch_size} x "
                f"{self.scaling.num_workers} = {per_pass})"
            )
        merged = self.export.enabled and self.export.merge_lora
        if self.lora is not None and self.lora.trainable_tokens and not merged:
            raise ValueError("lora.trainable_tokens needs export.merge_lora: vLLM's LoRA support cannot load "
                             "trained embedding rows, so only the merged model serves what was trained")
        if self.deepspeed.offload_params and self.deepspeed.zero_stage != 3:
            raise ValueError("deepspeed.offload_params needs deepspeed.zero_stage 3")
        if self.method == "grpo":
            # The rollout engine gets the policy's new weights every step as a LoRA adapter saved from one rank;
            # full-weight sync (and ZeRO-3's gathering for it) is not built yet.
            if self.lora is None:
                raise ValueError("lora: method grpo trains LoRA adapters (the rollout engine loads them every step); "
                                 "full fine-tuning is not supported for grpo yet")
            if self.lora.trainable_tokens:
                raise ValueError("lora.trainable_tokens: vLLM's LoRA support cannot load trained embedding rows, so "
                                 "grpo's rollouts would not see them")
            if self.deepspeed.zero_stage == 3:
                raise ValueError("deepspeed.zero_stage: grpo needs 0-2 (each rank holds the whole adapter to save)")
        return self

    @property
    def grad_accum(self) -> int:
        return self.batch.global_batch_size // (self.batch.micro_batch_size * self.scaling.num_workers)

    @property
    def split(self) -> str:
        """The dataset folder's subfolder this method trains on."""
        return {"dpo": "dpo", "grpo": "rl"}.get(self.method, "sft")
