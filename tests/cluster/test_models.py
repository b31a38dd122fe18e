import json
import os

import pytest
import torch
from tokenizer_checks import assert_same_ids_as_transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster import models, prompts


def test_local_folder_and_errors(tmp_path, tiny_model):
    assert models.resolve_model(str(tiny_model)) == tiny_model.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelResolutionError, match=r"no config\.json"):
        models.resolve_model(str(tmp_path / "empty"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(models.ModelResolutionError, match="HF_HUB_OFFLINE"):
        models.resolve_model("someone/some-model")


def test_tiny_model_loads_with_template(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert tok.chat_template == prompts.CHAT_TEMPLATE
    gen = json.loads((tiny_model / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids(prompts.END) in gen["eos_token_id"]
    out = model(torch.tensor([prompts.encode_prompt(tok, [{"role": "user", "content": "hi"}])]))
    assert out.logits.shape[-1] == len(tok)


def _vllm_greedy(model_dir, prompt_ids, n):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=256, enforce_eager=True,
              distributed_executor_backend="uni")
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt_ids)], SamplingParams(temperature=0, max_tokens=n))
    return list(out[0].outputs[0].token_ids)


@pytest.mark.slow
def test_default_model_converts_and_matches_vllm(monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    path = models.resolve_model("default")
    meta = json.loads((path / models.MARKER).read_text())
    assert meta["gguf_sha256"] and (path / "model.safetensors").is_file()
    assert models.resolve_model("gemma-3-270m") == path  # cached, not converted again
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template == prompts.CHAT_TEMPLATE
    assert prompts.START in tok.get_vocab()
    assert_same_ids_as_transformers(path)  # the data pipeline's encoder on Gemma's 262k vocabulary
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok("The capital of France is Paris. The capital of Germany is", add_special_tokens=True)["input_ids"]
    hf = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0][len(ids):].tolist()
    del model
    assert _vllm_greedy(path, ids, 8) == hf
