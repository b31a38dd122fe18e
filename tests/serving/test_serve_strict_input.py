"""The four classes of input that used to reach the engine and come back as HTTP 500 (one of them also leaving a
request in the engine's queue), and the smaller findings of the same probe, against the main app (tiny model,
API key on). Each is now a 4xx naming the field, and the engine's queue is empty afterwards.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}
TRANSLATE = {"text": "Good morning, how are you today?", "source_lang": "en", "target_lang": "de", "max_tokens": 8}
SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def client(main_app: str, api_key: str):
    with httpx.Client(base_url=main_app, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as c:
        yield c


def post_raw(client: httpx.Client, path: str, body: dict, **headers: str) -> httpx.Response:
    """JSON as a client library writes it, `\\ud800` escapes included (json.dumps keeps them as escapes)."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json",
                                                                          **headers})


def refused(r: httpx.Response, param: str, status: int = 422) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert body["error"]["param"] == param, body
    assert body["error"]["message"].startswith(f"{param}:"), body
    assert body["request_id"]
    return body["error"]


def queue_depth(client: httpx.Client) -> int:
    return int(client.get("/healthz").json()["queue_depth"])


def assert_queue_empty(client: httpx.Client, timeout: float = 15.0) -> None:
    """Aborting in the engine is asynchronous: poll briefly, then require an empty queue."""
    deadline = time.monotonic() + timeout
    while queue_depth(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queue_depth(client) == 0


# ---- 1. lone surrogates, in every text field -------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/translate", {**TRANSLATE, "text": f"Hello {SURROGATE} world"}, "text"),
    ("/v1/translate", {**TRANSLATE, "text": None, "texts": ["fine", SURROGATE]}, "texts[1]"),
    ("/v1/translate", {**TRANSLATE, "source_lang": f"e{SURROGATE}"}, "source_lang"),
    ("/v1/translate", {"history": [{"role": "user", "content": "Translate: hi"},
                                   {"role": "assistant", "content": f"hallo{SURROGATE}"}],
                       "instruction": "shorter", "target_lang": "de"}, "history[1].content"),
    ("/v1/translate", {"history": [{"role": "user", "content": "Translate: hi"},
                                   {"role": "assistant", "content": "hallo"}],
                       "instruction": f"shorter {SURROGATE}", "target_lang": "de"}, "instruction"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": SURROGATE}]}, "messages[0].content"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "text",
                                                                               "text": SURROGATE}]}]},
     "messages[0].content[0].text"),
    ("/v1/chat/completions", {**CHAT, "stop": ["ok", SURROGATE]}, "stop[1]"),
    ("/v1/chat/completions", {**CHAT, "user": SURROGATE}, "user"),
    ("/v1/chat/completions", {**CHAT, "model": SURROGATE}, "model"),
    ("/v1/completions", {**COMPLETION, "prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": ["fine", SURROGATE]}, "prompt[1]"),
    ("/v1/completions", {**COMPLETION, "stop": SURROGATE}, "stop"),
])
def test_lone_surrogates_are_422_naming_the_field(client: httpx.Client, path: str, body: dict, param: str):
    body = {k: v for k, v in body.items() if v is not None}
    err = refused(post_raw(client, path, body), param)
    assert "lone surrogate" in err["message"]
    assert_queue_empty(client)


def test_surrogate_pairs_are_text(client: httpx.Client):
    """An escaped pair (an emoji) is valid text and is served."""
    body = {**COMPLETION, "prompt": "Hello \ud83d\ude00"}  # json.dumps writes the pair as two escapes
    assert post_raw(client, "/v1/completions", body).status_code == 200


# ---- 2. sampling combinations the engine refuses -----------------------------------------------------------


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/v1/chat/completions", {"n": 2}, "n"),  # more than one choice with greedy decoding (the default here)
    ("/v1/completions", {"n": 2, "temperature": 0}, "n"),
    ("/v1/chat/completions", {"stop": ""}, "stop"),
    ("/v1/chat/completions", {"stop": ["a", ""]}, "stop[1]"),
    ("/v1/completions", {"stop": [""]}, "stop[0]"),
    ("/v1/completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/chat/completions", {"stream": True, "n": 3}, "n"),
])
def test_refused_sampling_combinations_are_422(client: httpx.Client, path: str, extra: dict, param: str):
    body = {**(CHAT if "chat" in path else COMPLETION), **extra}
    refused(client.post(path, json=body), param)
    assert_queue_empty(client)


def test_several_choices_with_sampling_are_served(client: httpx.Client):
    r = client.post("/v1/chat/completions", json={**CHAT, "n": 2, "temperature": 0.8, "seed": 3})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2


# ---- 3. integers outside the engine's range ----------------------------------------------------------------


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/v1/chat/completions", {"seed": 2**64}, "seed"),
    ("/v1/completions", {"seed": 2**64 + 1, "temperature": 1.0}, "seed"),
    ("/v1/completions", {"seed": -(2**63) - 1}, "seed"),
    ("/v1/chat/completions", {"top_k": 2**40}, "top_k"),
    ("/v1/chat/completions", {"max_tokens": 2**70}, "max_tokens"),
    ("/v1/chat/completions", {"max_completion_tokens": 2**64}, "max_completion_tokens"),
    ("/v1/completions", {"n": 2**64}, "n"),
    ("/v1/completions", {"max_tokens": 0}, "max_tokens"),
    ("/v1/translate", {"max_tokens": 2**64}, "max_tokens"),
])
def test_integers_outside_the_engine_range_are_422(client: httpx.Client, path: str, extra: dict, param: str):
    base = TRANSLATE if path == "/v1/translate" else CHAT if "chat" in path else COMPLETION
    refused(client.post(path, json={**base, **extra}), param)
    assert_queue_empty(client)


@pytest.mark.parametrize("seed", [0, 2**63 - 1, -(2**63)])
def test_seeds_at_the_ends_of_the_range_are_served(client: httpx.Client, seed: int):
    r = client.post("/v1/completions", json={**COMPLETION, "temperature": 1.0, "seed": seed})
    assert r.status_code == 200, r.text
    assert_queue_empty(client)


# ---- no coercion ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/v1/chat/completions", {"max_tokens": "8"}, "max_tokens"),
    ("/v1/chat/completions", {"max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {"temperature": "0.5"}, "temperature"),
    ("/v1/chat/completions", {"stream": "true"}, "stream"),
    ("/v1/chat/completions", {"seed": 1.0}, "seed"),
    ("/v1/completions", {"echo": 1}, "echo"),
    ("/v1/completions", {"n": "1"}, "n"),
    ("/v1/translate", {"max_tokens": "8"}, "max_tokens"),
    ("/v1/translate", {"guard": "yes"}, "guard"),
    ("/v1/translate", {"guard": 1}, "guard"),
    ("/v1/translate", {"temperature": False}, "temperature"),
])
def test_no_type_coercion(client: httpx.Client, path: str, extra: dict, param: str):
    base = TRANSLATE if path == "/v1/translate" else CHAT if "chat" in path else COMPLETION
    refused(client.post(path, json={**base, **extra}), param)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(client: httpx.Client, literal: str):
    # Python's JSON parser accepts these non-standard literals; the server must not.
    raw = json.dumps({**CHAT, "temperature": 0.5})[:-1] + f', "repetition_penalty": {literal}}}'
    r = client.post("/v1/chat/completions", content=raw.encode(), headers={"content-type": "application/json"})
    refused(r, "repetition_penalty")


def test_integral_floats_are_numbers(client: httpx.Client):
    """JSON has one number type: 1 is a valid temperature, as is 1.0."""
    assert client.post("/v1/chat/completions", json={**CHAT, "temperature": 1, "seed": 1}).status_code == 200


# ---- text that is empty once normalized, and same-language requests --------------------------------------


@pytest.mark.parametrize("text", ["\u200b", "\ufeff\u200b\u200c\u200d\u2060", " \u00a0\u3000 ", "\u0301\u0302",
                                  "\x00\x01", "\u202e\u202c"])
def test_text_of_only_invisible_characters_is_empty(client: httpx.Client, text: str):
    err = refused(post_raw(client, "/v1/translate", {**TRANSLATE, "text": text}), "text")
    assert "empty text" in err["message"]


def test_same_source_and_target_language_is_refused(client: httpx.Client):
    refused(client.post("/v1/translate", json={**TRANSLATE, "source_lang": "de"}), "target_lang")
    refused(client.post("/v1/translate", json={**TRANSLATE, "source_lang": "deu_Latn"}), "target_lang")
    # Detected: the message says so, and how to override a wrong detection.
    err = refused(client.post("/v1/translate", json={**TRANSLATE, "source_lang": None, "target_lang": "en"}),
                  "source_lang")
    assert "detected as English" in err["message"] and "pass source_lang" in err["message"]


# ---- request ids ---------------------------------------------------------------------------------------------


def test_a_well_formed_client_request_id_is_adopted(client: httpx.Client):
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": "8"}, headers={"X-Request-ID": "abc-123.4"})
    assert r.status_code == 422 and r.json()["request_id"] == "abc-123.4"
    assert r.headers["x-request-id"] == "abc-123.4"


@pytest.mark.parametrize("rid", ["has space", "x" * 129, "-leading-dash", "quote\"d", "ü-nicode"])
def test_a_malformed_client_request_id_is_400(main_app: str, api_key: str, rid: str):
    headers = [("authorization", f"Bearer {api_key}"), ("x-request-id", rid)]
    r = httpx.post(f"{main_app}/v1/chat/completions", json=CHAT, headers=[(k.encode(), v.encode()) for k, v in headers],
                   timeout=60)
    err = refused(r, "x-request-id", 400)
    assert rid not in json.dumps(err)
    assert r.json()["request_id"] != rid


# ---- open routes ----------------------------------------------------------------------------------------------


OPEN = ["/healthz", "/metrics", "/openapi.json", "/docs", "/redoc", "/", "/-/routes"]


@pytest.mark.parametrize("path", OPEN)
def test_the_documented_open_routes_need_no_key(main_app: str, api_key: str, path: str):
    """The list docs/RELIABILITY.md publishes: probes, the API's contract and the playground page. None of them
    carries a key or a user's data; everything under /v1/ needs the key (test_serve_bad_input)."""
    r = httpx.get(f"{main_app}{path}", timeout=60)
    assert r.status_code == 200, (path, r.status_code)
    assert api_key not in r.text


def test_published_schema_names_the_served_models(client: httpx.Client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        assert schema[name]["properties"]["model"]["enum"] == ["tiny", "parrot"], schema[name]["properties"]["model"]
    branches = schema["TranslateRequest"]["properties"]["model"]["anyOf"]
    assert {"type": "string", "enum": ["tiny", "parrot"]} in branches
    seed = schema["ChatCompletionRequest"]["properties"]["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["maximum"]) == (-(2**63), 2**63 - 1)


# ---- whatever ends a request, nothing is left in the engine --------------------------------------------------


LONG = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 128, "n": 4, "ignore_eos": True,
        "temperature": 1.0, "seed": 5}


def completion_tokens(client: httpx.Client) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(client.get("/metrics").text)
               for s in f.samples if s.name == "xalign_tokens_total" and s.labels.get("kind") == "completion")


def drop_while_generating(client: httpx.Client, main_app: str, api_key: str, body: dict) -> None:
    """Send `body` on a raw connection, wait until the engine holds the request, then drop the connection.
    Waiting on the engine's queue (not on a client timeout) makes "the client left mid-generation" hold on any
    host, however fast it generates."""
    url = httpx.URL(main_app)
    payload = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((url.host, url.port), timeout=60) as sock:
        sock.sendall(head + payload)
        deadline = time.monotonic() + 60
        while queue_depth(client) == 0:
            if select.select([sock], [], [], 0)[0]:
                pytest.fail(f"answered before the engine was seen generating: {sock.recv(2000)[:500]!r}")
            assert time.monotonic() < deadline, "the request never reached the engine"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # drop it: RST, no goodbye


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_client_disconnect_aborts_the_engine_request(client: httpx.Client, main_app: str, api_key: str,
                                                     stream: bool):
    for _ in range(2):
        before = completion_tokens(client)
        drop_while_generating(client, main_app, api_key, {**LONG, "stream": stream})
        assert_queue_empty(client)
        generated = completion_tokens(client) - before
        assert generated < LONG["max_tokens"] * LONG["n"], f"the request ran to its end ({generated} tokens)"


def test_guard_retry_leaves_nothing_in_the_engine(client: httpx.Client):
    from serve_fixtures import FOX

    r = client.post("/v1/translate", json={"text": FOX, "source_lang": "en", "target_lang": "fr", "model": "parrot",
                                           "guard": True})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["guard"]["action"] == "retried"
    assert_queue_empty(client)
