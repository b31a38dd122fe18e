"""The Ray Train worker: builds the DeepSpeed engine, restores the latest checkpoint, streams its shard
of the data from Ray Data, trains, reports checkpoints (with the export at the end)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cluster.hardware import choose_dtype
from pipelines.train import checkpointing
from pipelines.train.checkpointing import TrainState
from pipelines.train.loop import Plan, PolicyTrainer, StepStats, metrics_row, train
from pipelines.train.metrics import MetricsLogger, peak_flops_per_worker
from pipelines.train.recipe import TrainRecipe


class WorkerJob(BaseModel):
    """Everything a worker needs, as plain data (it crosses process boundaries in train_loop_config)."""

    recipe: dict[str, Any]
    run_id: str
    run_dir: str
    model_dir: str
    dataset_id: str
    dataset_path: str
    recipe_hash: str
    plan: dict[str, int]
    stop_after_step: int | None = None
    # Fault drills (XALIGN_TRAIN_HOLD_AFTER_STEP): once per run, after that step's checkpoint, the last rank
    # records its PID in `<run>/.holding` and waits, so a test (or an operator rehearsing recovery) can
    # SIGKILL that worker, or the driver, at a known point of a live run.
    hold_after_step: int | None = None
    rollout_actor: str | None = None  # GRPO: the name of the vLLM rollout actor the driver started

    def lineage(self, step: int) -> dict[str, Any]:
        r = self.recipe
        out = {
            "run_id": self.run_id, "step": step, "method": r["method"], "lora": r["lora"] is not None,
            "dataset_id": self.dataset_id, "dataset_path": self.dataset_path, "recipe_hash": self.recipe_hash,
            "recipe": r["name"], "base_model": r["model"]["base"], "base_model_path": self.model_dir,
        }
        # Trained on top of another run's export (DPO or GRPO after SFT): that run's lineage, as the parent.
        parent = Path(self.model_dir).parent / "lineage.json"
        if Path(self.model_dir).name == "model" and parent.is_file():
            out["parent"] = json.loads(parent.read_text())
        return out


def _threads(recipe: TrainRecipe) -> int:
    return recipe.scaling.torch_threads or max(1, round(recipe.scaling.cpus_per_worker))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch

    job = WorkerJob.model_validate(config)
    recipe = TrainRecipe.model_validate(job.recipe)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # `dtype: auto` is decided here, on the worker's own hardware; everything below sees the concrete dtype.
    precision = choose_dtype(recipe.model.dtype, use_gpu=recipe.scaling.use_gpu)
    recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"dtype": precision.dtype})})
    if rank == 0:
        (Path(job.run_dir) / "precision.json").write_text(
            json.dumps({"requested": job.recipe["model"]["dtype"], "dtype": precision.dtype,
                        "reason": precision.reason}) + "\n")
    _record_worker(Path(job.run_dir), rank)
    torch.set_num_threads(_threads(recipe))
    run_dir = Path(job.run_dir)
    plan = Plan(**job.plan)

    trainer = PolicyTrainer(recipe, Path(job.model_dir), plan, world)
    meta = {"dataset_id": job.dataset_id, "method": recipe.method, "recipe_hash": job.recipe_hash,
            "run_id": job.run_id}
    lora = recipe.lora is not None
    state = TrainState()
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = checkpointing.load(trainer.engine, Path(d), rank, world, meta, lora)
    if recipe.method == "grpo":
        from pipelines.train.grpo_step import GrpoStep
        from pipelines.train.rollout import find_engine

        assert job.rollout_actor is not None
        trainer.rollouts = GrpoStep(find_engine(job.rollout_actor), run_dir / "rollout-adapters", rank, state.step)
    logger = MetricsLogger(run_dir if rank == 0 else None, resume_step=state.step)
    peak = peak_flops_per_worker(recipe.metrics.peak_tflops_per_worker, recipe.scaling.use_gpu, recipe.model.dtype)
    progress = _progress(rank, plan.total_steps, state.step, job.run_id)

    shard = ray.train.get_dataset_shard("train")

    def source(epoch: int):
        shuffle = recipe.data.shuffle_buffer_rows or None
        return iter(shard.iter_batches(
            batch_size=recipe.batch.micro_batch_size, batch_format="numpy", drop_last=False,
            local_shuffle_buffer_size=shuffle,
            local_shuffle_seed=(recipe.training.seed + epoch) if shuffle else None,
        ))

    def after_step(st: TrainState, stats: StepStats) -> bool:
        row = metrics_row(trainer, st, stats, peak)
        if st.step % recipe.run.log_every == 0 or st.step == plan.total_steps:
            logger.log(row)
        if progress is not None:
            progress.update(1)
        last = st.step >= plan.total_steps
        stop = job.stop_after_step is not None and st.step >= job.stop_after_step
        if last or stop or st.step % recipe.checkpoint.every_steps == 0:
            _checkpoint(trainer, st, row, job, rank, world, meta, export=last and recipe.export.enabled)
        if job.hold_after_step is not None and st.step == job.hold_after_step and rank == world - 1:
            _hold(run_dir, st.step)
        return stop

    try:
        train(trainer, source, state, after_step)
    finally:
        logger.close()
        if progress is not None:
            progress.close()


def _record_worker(run_dir: Path, rank: int) -> None:
    """`<run>/workers/rank-NNNNN.json`: which process trains each rank now (rewritten by every (re)start)."""
    import socket

    d = run_dir / "workers"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rank-{rank:05d}.json").write_text(json.dumps({"rank": rank, "pid": os.getpid(),
                                                         "host": socket.gethostname(), "started": time.time()}))


def _hold(run_dir: Path, step: int, max_wait_s: float = 600.0) -> None:
    """The fault drill's pause (see WorkerJob.hold_after_step): at most once per run, and never forever."""
    done = run_dir / ".held"
    if done.exists():
        return  # the restarted attempt passes this step normally
    done.write_text(str(step))
    holding = run_dir / ".holding"
    holding.write_text(json.dumps({"pid": os.getpid(), "step": step}))
    deadline = time.monotonic() + max_wait_s
    while holding.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    holding.unlink(missing_ok=True)


def _checkpoint(trainer: PolicyTrainer, state: TrainState, row: dict[str, Any], job: WorkerJob, rank: int,
                world: int, meta: dict[str, Any], export: bool) -> None:
    import ray.train

    recipe = trainer.recipe
    tmp = Path(tempfile.mkdtemp(prefix=f"xalign-ckpt-{state.step}-r{rank}-"))
    try:
        checkpointing.save(trainer.engine, state, tmp, rank, world, meta, lora=recipe.lora is not None)
        if export:
            from pipelines.train.export import export as export_model

            export_model(trainer.engine, recipe, trainer.model_dir, tmp / "export", trainer.zero_stage,
                         job.lineage(state.step))
        metrics = {k: v for k, v in row.items() if v is not None}
        metrics["completed"] = state.step >= trainer.plan.total_steps
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                         checkpoint_dir_name=f"checkpoint_{state.step:06d}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _progress(rank: int, total: int, done: int, run_id: str):
    if rank != 0 or os.environ.get("XALIGN_NO_PROGRESS") == "1":
        return None
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=total, desc=f"train {run_id}", unit="step")
    if done:
        bar.update(done)
    return bar
