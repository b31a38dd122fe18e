"""Property-based tests over the engine's parameter domain, not only the schema's: for every POST route, requests
whose values range past what the schema allows and into what the engine refuses (lone surrogates, invisible
text, empty stop strings, seeds past 64 bits, top_k past the vocabulary, greedy decoding with several choices,
token ids outside the vocabulary, streaming and not) against the main app on the real engine.

What must hold for every example: no 5xx, an error is the API's JSON error shape naming a field, a streamed
answer ends with [DONE], and the engine's queue is empty once the answer is in.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

EXAMPLES = 40  # per route; derandomized, so CI runs the same examples every time
ODD_TEXT = ["\ud800", "a\udfffb", "\u200b\ufeff", "", " ", "\x00", "\u0301", "Hello", "Guten Tag, wie geht's?",
            "你好，世界。", "Habari ya asubuhi, rafiki yangu."]

texts = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=40))
maybe = st.none
models = st.sampled_from(["tiny", "parrot", "nope", ""])
floats = st.one_of(st.floats(-3, 3, allow_nan=False), st.sampled_from([0, 1, 2, 1e-9, 1e9]))
big_ints = st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 2**100])
seeds = st.one_of(maybe(), st.integers(-3, 10**6), big_ints)
counts = st.one_of(maybe(), st.integers(-2, 200), big_ints)
stops = st.one_of(maybe(), texts, st.lists(texts, max_size=6))
languages = st.sampled_from([None, "en", "de", "fr", "zh", "sw", "deu_Latn", "eng_Latn", "xx", "", "EN"])


def sampling() -> st.SearchStrategy[dict]:
    """The sampling fields both OpenAI routes take, over the engine's domain; absent fields are left out."""
    fields = {
        "temperature": st.one_of(maybe(), floats), "top_p": st.one_of(maybe(), floats),
        "top_k": st.one_of(maybe(), st.integers(-3, 400_000), big_ints), "n": st.one_of(maybe(), st.integers(-1, 4)),
        "seed": seeds, "stop": stops, "max_tokens": counts, "presence_penalty": st.one_of(maybe(), floats),
        "frequency_penalty": st.one_of(maybe(), floats), "repetition_penalty": st.one_of(maybe(), floats),
        "ignore_eos": st.one_of(maybe(), st.booleans()), "stream": st.one_of(maybe(), st.booleans()),
        "user": st.one_of(maybe(), texts),
    }
    return st.fixed_dictionaries({}, optional=fields)


chat_bodies = st.builds(
    lambda model, msgs, extra: {"model": model, "messages": msgs, **extra}, models,
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                    "content": st.one_of(texts, st.lists(st.fixed_dictionaries(
                                        {"type": st.just("text"), "text": texts}), max_size=2))}),
             min_size=0, max_size=3),
    sampling())
completion_bodies = st.builds(
    lambda model, prompt, echo, extra: {"model": model, "prompt": prompt, **({"echo": echo} if echo else {}),
                                        **extra}, models,
    st.one_of(texts, st.lists(texts, max_size=3), st.lists(st.integers(-5, 300_000), max_size=8),
              st.lists(st.lists(st.integers(-5, 300), min_size=1, max_size=4), max_size=2)),
    st.booleans(), sampling())
_translate_options = {"source_lang": languages, "model": models, "max_tokens": counts, "temperature": floats,
                      "repetition_penalty": floats, "guard": st.booleans(), "session": st.booleans()}
# Requests a client would send, with one value at a time pushed into the engine's domain by the other branches.
_plausible = st.fixed_dictionaries(
    {"text": st.sampled_from(["Good morning, how are you today?", "The weather is lovely this afternoon."]),
     "source_lang": st.sampled_from(["en", "eng_Latn"]), "target_lang": st.sampled_from(["de", "fr", "zh", "sw"])},
    optional={"max_tokens": st.integers(1, 16), "temperature": st.sampled_from([0, 0.7, 2]),
              "repetition_penalty": st.sampled_from([1, 1.3, 2]), "guard": st.booleans(),
              "model": st.sampled_from(["tiny", "parrot"])})
translate_bodies = st.one_of(
    _plausible,
    st.fixed_dictionaries({"text": texts, "target_lang": languages}, optional=_translate_options),
    st.fixed_dictionaries({"texts": st.lists(texts, max_size=4), "target_lang": languages},
                          optional=_translate_options),
    st.fixed_dictionaries({"target_lang": languages}, optional={"text": texts, "texts": st.lists(texts),
                                                                **_translate_options}))


@pytest.fixture(scope="module")
def client(main_app: str, api_key: str):
    with httpx.Client(base_url=main_app, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as c:
        yield c


def check(client: httpx.Client, path: str, body: dict) -> int:
    raw = json.dumps({k: v for k, v in body.items() if v is not None}).encode()  # escapes kept as in a client's JSON
    with client.stream("POST", path, content=raw, headers={"content-type": "application/json"}) as r:
        data = r.read()
    assert r.status_code < 500, (r.status_code, data[:500], body)
    if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in data.decode().split("\n\n") if line]
        assert events[-1] == "data: [DONE]", events[-3:]
        assert not any('"error"' in e for e in events), events  # a mid-stream error is a 5xx in disguise
    elif r.status_code >= 400:
        err = json.loads(data)["error"]
        assert err["message"] and err["type"], err
        if r.status_code in (400, 422):
            assert err["param"], (err, body)  # a refusal names the field at fault
    deadline = time.monotonic() + 15
    while client.get("/healthz").json()["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/healthz").json()["queue_depth"] == 0, body
    return r.status_code


def run(client: httpx.Client, path: str, bodies: st.SearchStrategy[dict]) -> dict[int, int]:
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def prop(body: dict) -> None:
        status = check(client, path, body)
        seen[status] = seen.get(status, 0) + 1

    prop()
    print(path, "statuses:", dict(sorted(seen.items())))
    return seen


@pytest.mark.parametrize(("path", "bodies"), [("/v1/chat/completions", chat_bodies),
                                              ("/v1/completions", completion_bodies),
                                              ("/v1/translate", translate_bodies)], ids=["chat", "completions",
                                                                                         "translate"])
def test_no_5xx_and_an_empty_queue_over_the_engine_domain(client: httpx.Client, path: str, bodies):
    seen = run(client, path, bodies)
    assert sum(seen.values()) == EXAMPLES
    assert not [s for s in seen if s >= 500]
    assert seen.get(200), "no example reached the engine"
