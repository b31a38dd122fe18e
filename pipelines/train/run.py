"""`run_train`: one training run on Ray Train (TorchTrainer wrapping DeepSpeed) from a recipe.

The run folder `<output_dir>/<run_id>/` holds recipe.resolved.yaml, metrics.jsonl, tensorboard/,
the Ray Train checkpoints (unless `checkpoint.storage` points elsewhere), status.json and, once the
run completes, export/ (HF model, LoRA adapter, lineage.json). `resume=<run folder>` continues a
stopped run from its latest checkpoint, with the recipe it was started with.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.config import RecipeError, load_recipe, recipe_hash, save_resolved
from cluster.models import resolve_model
from cluster.ray_session import ray_session
from pipelines.train.loop import Plan
from pipelines.train.recipe import TrainRecipe
from pipelines.train.shards import check_tokenizer, open_dataset, read_split, verify_checksums
from pipelines.train.worker import WorkerJob, train_loop_per_worker

RESOLVED = "recipe.resolved.yaml"
STATUS = "status.json"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints


def _located(recipe: TrainRecipe) -> TrainRecipe:
    """With `XALIGN_ARTIFACTS` set (pods without a shared disk), a relative dataset path is read from there and
    checkpoints (so the published export too) go there unless the recipe names a place."""
    if not os.environ.get(storage.ARTIFACTS_ENV):
        return recipe
    data = recipe.data.model_copy(update={"path": storage.located(recipe.data.path)})
    ckpt = recipe.checkpoint
    if ckpt.storage is None:
        ckpt = ckpt.model_copy(update={"storage": storage.located(recipe.run.output_dir)})
    return recipe.model_copy(update={"data": data, "checkpoint": ckpt})


def _run_id(recipe: TrainRecipe) -> str:
    return recipe.run.name or f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _storage(recipe: TrainRecipe, output_dir: Path) -> tuple[str, Any]:
    """(storage_path, filesystem) for Ray Train: the output folder, or the recipe's URI via pyarrow."""
    if recipe.checkpoint.storage is None:
        return str(output_dir), None
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(recipe.checkpoint.storage)
    return path, fs


def _changed_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def _resume_recipe(run_dir: Path, recipe: TrainRecipe | None) -> TrainRecipe:
    saved_file = run_dir / RESOLVED
    if not saved_file.is_file():
        raise RecipeError(f"--resume {run_dir}: no {RESOLVED} there (not an xalign training run folder)")
    saved = load_recipe(TrainRecipe, saved_file)
    if recipe is not None:
        changed = _changed_keys(saved.model_dump(mode="json"), recipe.model_dump(mode="json"))
        if changed:
            raise RecipeError(
                f"--resume {run_dir}: the recipe differs from the run's ({', '.join(changed)}); a resumed run "
                "continues with the recipe it started with"
            )
    return saved


def _job_submission_id() -> str | None:
    """The Ray job this driver runs as, if it was started by `ray job submit` (the job supervisor passes
    the job's metadata to the entrypoint in RAY_JOB_CONFIG_JSON_ENV_VAR)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return (json.loads(raw).get("metadata") or {}).get("job_submission_id")
    except (json.JSONDecodeError, AttributeError):
        return None


def _write_status(run_dir: Path, **fields: Any) -> None:
    (run_dir / STATUS).write_text(json.dumps(fields, indent=2))


def run_train(recipe: TrainRecipe | None, address: str | None = None, resume: str | os.PathLike[str] | None = None,
              stop_after_step: int | None = None) -> Path:
    """Train and return the run folder. `stop_after_step` stops (checkpointed) after that step, for `--resume`."""
    if resume is not None:
        run_dir = localize_run(str(resume)) if storage.is_uri(resume) else Path(resume).expanduser().resolve()
        recipe = _resume_recipe(run_dir, recipe)
        run_id, output_dir = run_dir.name, run_dir.parent
    else:
        if recipe is None:
            raise RecipeError("run_train needs a recipe or a run folder to resume")
        recipe = _located(recipe)
        output_dir = Path(recipe.run.output_dir).expanduser().resolve()
        run_id = _run_id(recipe)
        run_dir = output_dir / run_id
        if (run_dir / RESOLVED).exists():
            raise RecipeError(f"run.name: {run_dir} already holds a run; pass --resume {run_dir} to continue it")
    # Everything that can be checked in the driver is checked before a run folder exists.
    info = open_dataset(recipe.data.path, recipe.split)
    plan = Plan.for_rows(recipe, info.num_rows)
    model_dir = resolve_model(recipe.model.base)
    check_tokenizer(info, model_dir)
    if recipe.data.verify_checksums:
        verify_checksums(info)
    job_id = _job_submission_id()
    if job_id and not Path(recipe.run.output_dir).is_absolute():
        # A submitted job runs in a temporary copy of the working dir: relative outputs vanish with it.
        print(f"warning: run.output_dir={recipe.run.output_dir!r} is relative; under `ray job submit` it lands in "
              f"the job's temporary working dir ({run_dir}). Pass an absolute path or shared storage.", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, run_dir)
    hold_env = os.environ.get("XALIGN_TRAIN_HOLD_AFTER_STEP")
    job = WorkerJob(
        recipe=recipe.model_dump(mode="json"), run_id=run_id, run_dir=str(run_dir), model_dir=str(model_dir),
        dataset_id=info.dataset_id, dataset_path=info.location, recipe_hash=recipe_hash(recipe),
        plan=plan.__dict__, stop_after_step=stop_after_step, hold_after_step=int(hold_env) if hold_env else None,
        rollout_actor=f"xalign-rollout-{run_id}" if recipe.method == "grpo" else None,
    )
    _write_status(run_dir, state="running", run_id=run_id, total_steps=plan.total_steps,
                  steps_per_epoch=plan.steps_per_epoch, dataset_rows=info.num_rows,
                  dropped_rows_per_epoch=plan.dropped_rows_per_epoch, driver_pid=os.getpid(),
                  job_submission_id=job_id)
    _mirror_run(recipe, run_id, run_dir)  # from now on the run can be continued from storage alone

    try:
        result = _fit(recipe, job, info, run_id, output_dir, address)
    except BaseException as exc:
        _write_status(run_dir, state="failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}"[:4000])
        _mirror_run(recipe, run_id, run_dir)
        raise
    metrics = result.metrics or {}
    step = int(metrics.get("step", 0))
    completed = bool(metrics.get("completed"))
    export_uri = None
    if completed and recipe.export.enabled:
        _fetch_export(result.checkpoint, run_dir / "export")
        export_uri = _publish_export(recipe, run_id, run_dir / "export")
    _write_status(run_dir, state="completed" if completed else "stopped", run_id=run_id, step=step,
                  total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch, dataset_rows=info.num_rows,
                  dropped_rows_per_epoch=plan.dropped_rows_per_epoch, checkpoint=result.checkpoint.path
                  if result.checkpoint else None, export_uri=export_uri,
                  run_uri=_run_uri(recipe, run_id))
    _mirror_run(recipe, run_id, run_dir)
    return run_dir


def _fit(recipe: TrainRecipe, job: WorkerJob, info, run_id: str, output_dir: Path, address: str | None):
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = recipe.scaling
    resources = {**s.resources, "CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    storage_path, fs = _storage(recipe, output_dir)
    with ray_session(address):
        dataset = read_split(info, recipe.data.read_blocks)
        dataset.context.enable_progress_bars = False  # the training bar is the progress
        rollout = _start_rollout_engine(recipe, job) if recipe.method == "grpo" else None
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=job.model_dump(),
            torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=run_id, storage_path=storage_path, storage_filesystem=fs,
                checkpoint_config=CheckpointConfig(num_to_keep=recipe.checkpoint.num_to_keep),
                failure_config=FailureConfig(max_failures=recipe.run.max_failures),
            ),
            datasets={"train": dataset},
            # In-order execution makes each worker's shard the same rows in the same order on every
            # run, which is what lets a resumed run skip exactly the rows its checkpoint trained.
            dataset_config=DataConfig(execution_options=ExecutionOptions(preserve_order=True),
                                      enable_shard_locality=False),
        )
        try:
            return trainer.fit()
        finally:
            if rollout is not None:
                import ray

                ray.kill(rollout)


def _start_rollout_engine(recipe: TrainRecipe, job: WorkerJob):
    """GRPO's vLLM actor on the base model, before the workers that look it up by name (WorkerJob.rollout_actor)."""
    from transformers import AutoTokenizer

    from cluster.engine import EngineSettings
    from cluster.tokenizer import stop_token_ids
    from pipelines.train.rollout import start_engine

    g, lora = recipe.grpo, recipe.lora
    assert lora is not None and job.rollout_actor is not None  # the recipe's grpo checks
    settings = EngineSettings(model=job.model_dir, dtype=recipe.model.dtype, max_model_len=g.max_model_len,
                              max_num_seqs=max(g.group_size * recipe.batch.micro_batch_size * recipe.grad_accum, 1),
                              kv_cache_gib=g.kv_cache_gib, enable_lora=True, max_loras=2, max_lora_rank=lora.r,
                              seed=recipe.training.seed)
    stops = stop_token_ids(AutoTokenizer.from_pretrained(job.model_dir), job.model_dir)
    return start_engine(settings, job.model_dir, stops, num_cpus=g.engine_cpus, num_gpus=g.engine_gpus,
                        name=job.rollout_actor)


def _run_uri(recipe: TrainRecipe, run_id: str) -> str | None:
    """`<checkpoint.storage>/<run_id>/run` when checkpoints live in object storage: the run folder's mirror."""
    if recipe.checkpoint.storage is None or not storage.is_uri(recipe.checkpoint.storage):
        return None
    return storage.join(recipe.checkpoint.storage, run_id, "run")


def _mirror_run(recipe: TrainRecipe, run_id: str, run_dir: Path) -> None:
    """The run folder (recipe, status, metrics; not the export, published on its own) copied beside the run's
    checkpoints in object storage, so that `--resume <that URI>` continues it from another machine or pod."""
    uri = _run_uri(recipe, run_id)
    if uri is not None:
        storage.upload_dir(run_dir, uri, skip=("export",))


def localize_run(uri: str) -> Path:
    """A run mirrored in storage (`<checkpoint.storage>/<run_id>/run`) copied to `<run.output_dir>/<run_id>` of its
    recipe, where `--resume` continues it; its checkpoints stay in storage, where Ray Train restores them from."""
    try:
        src = storage.fetch_dir(uri)
    except storage.StorageError as exc:
        raise RecipeError(f"--resume {uri}: {exc}") from None
    if not (src / RESOLVED).is_file():
        raise RecipeError(f"--resume {uri}: no {RESOLVED} there (not an xalign training run folder)")
    saved = load_recipe(TrainRecipe, src / RESOLVED)
    run_id = uri.rstrip("/").rsplit("/", 2)[-2]
    dest = Path(saved.run.output_dir).expanduser().resolve() / run_id
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(storage.CHECKSUMS))
    return dest


def _publish_export(recipe: TrainRecipe, run_id: str, export: Path) -> str | None:
    """With checkpoints in object storage, the export also goes to `<checkpoint.storage>/<run_id>/export`: a
    stable address that any node serves or evaluates from (`s3://…/export/model`), each folder sealed with
    its checksums."""
    if recipe.checkpoint.storage is None or not storage.is_uri(recipe.checkpoint.storage):
        return None
    uri = storage.join(recipe.checkpoint.storage, run_id, "export")
    storage.publish_dir(export, uri)
    return uri


def _fetch_export(checkpoint, dest: Path) -> None:
    """Copy export/ out of the final checkpoint (local folder or any pyarrow storage)."""
    import pyarrow.fs

    if checkpoint is None:
        raise RuntimeError("training completed without a final checkpoint to export from")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(f"{checkpoint.path}/export", str(dest), source_filesystem=checkpoint.filesystem,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())
    shutil.copy2(dest.parent / RESOLVED, dest / RESOLVED)  # the full recipe beside its lineage

