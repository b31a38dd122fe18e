"""Checkpoints: every rank's DeepSpeed shard plus its data position and RNG state, in one folder per step.

Each rank writes its own files into a local folder and reports it with `ray.train.report`; Ray Train
merges the ranks' folders in storage. A restored rank loads the DeepSpeed state from the merged
folder and continues from its data position: the rows it already trained in the current epoch are
skipped, after checking they are exactly the rows recorded here (no sample is trained twice or skipped).
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DS_TAG = "deepspeed"
META = "xalign_checkpoint.json"


class ResumeError(RuntimeError):
    """A checkpoint that cannot continue this run (another world size, data order or recipe)."""


@dataclass
class DataPosition:
    """Where one rank stands in its shard of the data."""

    epoch: int = 0
    rows_in_epoch: int = 0  # rows of this rank's shard trained in the current epoch
    keys: list[str] = field(default_factory=list)  # their identities (sample ids), in training order

    def consume(self, keys: list[str]) -> None:
        self.keys.extend(keys)
        self.rows_in_epoch += len(keys)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.rows_in_epoch = 0
        self.keys = []


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # rows (SFT rows / DPO pairs) over all ranks
    tokens_seen: int = 0  # real tokens over all ranks
    position: DataPosition = field(default_factory=DataPosition)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        d = json.loads(text)
        return cls(step=d["step"], samples_seen=d["samples_seen"], tokens_seen=d["tokens_seen"],
                   position=DataPosition(**d["position"]))


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


@contextmanager
def _frozen_excluded_by_identity(engine, active: bool):
    """DeepSpeed leaves out frozen weights by the names `named_parameters()` lists, which names a tied weight
    once: Gemma's LM head (tied to the frozen 262k x 640 embedding) would still be written, ~0.7 GB at every
    LoRA checkpoint. Drop every state-dict alias of a frozen parameter instead."""
    if not active:
        yield
        return
    original = engine.module_state_dict
    frozen = [n for n, p in engine.module.named_parameters(remove_duplicate=False) if not p.requires_grad]

    def module_state_dict(destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        sd = original(destination=destination, prefix=prefix, keep_vars=keep_vars,
                      exclude_frozen_parameters=exclude_frozen_parameters)
        if exclude_frozen_parameters:
            for n in frozen:
                sd.pop(prefix + n, None)
        return sd

    engine.module_state_dict = module_state_dict
    try:
        yield
    finally:
        del engine.module_state_dict  # back to the class's method


def save(engine, state: TrainState, out: Path, rank: int, world_size: int, meta: dict[str, Any],
         lora: bool) -> None:
    """Collective: every rank calls it with its own (local) folder."""
    out.mkdir(parents=True, exist_ok=True)
    # LoRA: only the adapters change, so the frozen base is not written again at every checkpoint.
    with _frozen_excluded_by_identity(engine, lora):
        engine.save_checkpoint(str(out), tag=DS_TAG, client_state={"xalign_step": state.step},
                               exclude_frozen_parameters=lora)
    (out / f"data_state_rank{rank:05d}.json").write_text(state.to_json())
    torch.save(_rng_state(), out / f"rng_rank{rank:05d}.pt")
    if rank == 0:
        (out / META).write_text(json.dumps({**meta, "step": state.step, "world_size": world_size}, indent=2))


def load(engine, ckpt: Path, rank: int, world_size: int, meta: dict[str, Any], lora: bool) -> TrainState:
    info = json.loads((ckpt / META).read_text())
    if info["world_size"] != world_size:
        raise ResumeError(
            f"checkpoint {ckpt.name} was written by {info['world_size']} workers; this run has {world_size} "
            "(scaling.num_workers must match to restore DeepSpeed shards and data positions)"
        )
    for key in ("dataset_id", "method"):
        if info.get(key) != meta.get(key):
            raise ResumeError(f"checkpoint {ckpt.name}: {key} is {info.get(key)!r}, this run has {meta.get(key)!r}")
    path, _ = engine.load_checkpoint(str(ckpt), tag=DS_TAG, load_module_strict=not lora,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise ResumeError(f"DeepSpeed found no checkpoint under {ckpt}")
    state = TrainState.from_json((ckpt / f"data_state_rank{rank:05d}.json").read_text())
    rng = ckpt / f"rng_rank{rank:05d}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return state


def verify_replay(position: DataPosition, replayed: list[str]) -> None:
    """The rows skipped on resume must be exactly the rows the checkpoint says were trained."""
    if replayed != position.keys:
        first = next((i for i, (a, b) in enumerate(zip(replayed, position.keys)) if a != b),
                     min(len(replayed), len(position.keys)))
        raise ResumeError(
            f"data order changed since the checkpoint: row {first} of epoch {position.epoch} is "
            f"{replayed[first] if first < len(replayed) else '<end of shard>'!r}, the checkpoint trained "
            f"{position.keys[first] if first < len(position.keys) else '<nothing>'!r}. Resume with the same "
            "dataset, data.read_blocks and scaling.num_workers."
        )
