"""Evaluation fixtures: a tiny model that produces varied text, and a tiny COMET checkpoint built offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def chatty_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with an untied, random output head.

    With tied embeddings a 2-layer random model repeats the prompt's last token (a newline), so every
    hypothesis would be empty; an untied head makes greedy decoding emit varied multilingual text,
    which gives the metrics and the language ID something to judge.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    out = tmp_path_factory.mktemp("chatty-model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    cfg = base.config
    cfg.tie_word_embeddings = False
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg)
    model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("lm_head")}, strict=False)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    model.save_pretrained(out, safe_serialization=True)
    for f in tiny_model.iterdir():
        if f.is_file() and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_comet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.locations import comet_python

    py = comet_python()
    if not py.exists():
        pytest.fail(f"COMET environment missing at {py}; run cluster/setup.sh")
    out = tmp_path_factory.mktemp("tiny-comet")
    proc = subprocess.run([str(py), str(HERE / "tiny_comet.py"), str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
