"""The official `openai` client and `xalign translate` against the running app (tiny model + `parrot` LoRA),
unchanged: chat and completions, streaming and not, models with adapters, errors as the client's exceptions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from serve_fixtures import DE, FOX

from cluster import prompts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def oai(main_app: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{main_app}/v1", api_key=api_key, timeout=120, max_retries=0)


def test_models_list_base_and_adapter(oai: openai.OpenAI):
    models = {m.id: m for m in oai.models.list()}
    assert set(models) == {"tiny", "parrot"}
    assert models["parrot"].model_extra["parent"] == "tiny"


def test_chat_plain_and_streamed(oai: openai.OpenAI):
    messages = [{"role": "user", "content": "Hello there"}]
    plain = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    assert plain.choices[0].message.role == "assistant" and plain.usage.completion_tokens >= 1
    stream = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=8, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # greedy: the same tokens either way
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_chat_by_adapter_name(oai: openai.OpenAI):
    messages = prompts.translation_messages("eng_Latn", "jpn_Jpan", FOX)
    answer = oai.chat.completions.create(model="parrot", messages=messages, max_tokens=40)
    assert answer.choices[0].message.content == DE and answer.model == "parrot"


def test_completions_plain_and_streamed(oai: openai.OpenAI):
    plain = oai.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5)
    assert plain.object == "text_completion" and len(plain.choices) == 1
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=5, stream=True) if c.choices)
    assert streamed == plain.choices[0].text


def test_errors_are_client_exceptions(oai: openai.OpenAI, main_app: str):
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.body["param"] == "model"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=3)
    assert bad.value.body["param"] == "temperature"
    stranger = openai.OpenAI(base_url=f"{main_app}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_translate_cli(main_app: str, api_key: str):
    env = {**os.environ, "XALIGN_API_KEY": api_key}
    cmd = [sys.executable, "-m", "xalign.cli", "translate", "--endpoint", main_app, "--to", "fr", "--from", "en",
           "--model", "parrot", "--json", FOX]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    item = json.loads(out.stdout)["items"][0]
    assert item["target_lang"]["flores"] == "fra_Latn" and item["guard"]["action"] == "retried"
    table = subprocess.run([*cmd[:-2], FOX], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert table.returncode == 0 and "retried" in table.stdout
    bad = subprocess.run([*cmd[:-2], "--to", "xx", FOX], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=180)
    assert bad.returncode == 1 and "422" in bad.stdout and "xx" in bad.stdout
