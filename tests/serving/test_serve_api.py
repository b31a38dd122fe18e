"""The xalign Serve app end to end: a real vLLM engine (tiny model + `parrot` LoRA) behind a real Ray Serve
application on a private cluster. The tiny model answers gibberish, so these tests check structure,
routing, validation and the guard's decisions, not translation quality.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from serve_fixtures import DE, FOX, FR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(main_app: str, api_key: str):
    with httpx.Client(base_url=main_app, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as c:
        yield c


def _error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["error"]["param"] == param, body
    return body["error"]


# ---- health, models, auth -------------------------------------------------------------------------


def test_healthz_is_open_and_ready(main_app: str):
    r = httpx.get(f"{main_app}/healthz", timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "tiny" and body["adapters"] == ["parrot"]


def test_models_lists_base_and_adapter(client: httpx.Client):
    data = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in data] == [("tiny", None), ("parrot", "tiny")]


def test_api_key_required_and_checked(main_app: str, api_key: str):
    no_key = httpx.get(f"{main_app}/v1/models", timeout=30)
    _error(no_key, 401, "authorization")
    wrong = httpx.get(f"{main_app}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert _error(wrong, 401, "authorization")["type"] == "authentication_error"
    assert httpx.get(f"{main_app}/v1/models", headers={"X-API-Key": api_key}, timeout=30).status_code == 200


def test_api_key_never_logged(client: httpx.Client, api_key: str):
    import ray

    client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 2})
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    # Everything the app, Serve's proxy/controller, the runtime env agent and the driver wrote.
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert any("XalignServer" in p.name for p in files) and any("proxy" in p.name for p in files)
    leaked = [p.name for p in files if api_key in p.read_text(errors="ignore")]
    assert leaked == []
    assert any("API key auth: on" in p.read_text(errors="ignore") for p in logs.rglob("*XalignServer*") if p.is_file())


def test_cors_off_by_default(main_app: str):
    r = httpx.options(f"{main_app}/v1/models", timeout=30, headers={
        "Origin": "https://example.org", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_deploy_reuses_the_running_serve_port(main_app: str, main_recipe, serve_cluster: int):
    from serving import app

    assert app.serve_port() == serve_cluster and main_app == f"http://127.0.0.1:{serve_cluster}"
    with pytest.raises(RuntimeError, match=f"port {serve_cluster}"):
        app.deploy(main_recipe, port=serve_cluster + 1)


def test_openapi_published(main_app: str):
    spec = httpx.get(f"{main_app}/openapi.json", timeout=30).json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/translate", "/healthz"):
        assert path in spec["paths"]
    # The OpenAI requests are vLLM's, published with only the fields served.
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["additionalProperties"] is False and set(chat["required"]) == {"model", "messages"}
    assert {"messages", "max_completion_tokens", "stream_options"} <= set(chat["properties"])
    assert not {"tools", "response_format", "use_beam_search", "prompt_logprobs"} & set(chat["properties"])


# ---- chat and completions -------------------------------------------------------------------------


def _chat(client: httpx.Client, **extra) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hello there"}], "max_tokens": 6, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_chat_completion(client: httpx.Client):
    r = _chat(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] == 6 or choice["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def _sse_events(r: httpx.Response) -> list:
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_chat_streaming_matches_non_streaming(client: httpx.Client):
    plain = _chat(client).json()["choices"][0]["message"]["content"]
    events = _sse_events(_chat(client, stream=True, stream_options={"include_usage": True}))
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert text == plain  # greedy decoding: the same tokens either way
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes in (["length"], ["stop"])
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 1


def test_chat_with_n_choices(client: httpx.Client):
    body = _chat(client, n=2, temperature=1.0, seed=7).json()
    assert sorted(c["index"] for c in body["choices"]) == [0, 1]


def test_completions_batch_and_stream(client: httpx.Client):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": ["Hello", "Bonjour"], "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and [c["index"] for c in body["choices"]] == [0, 1]
    s = client.post("/v1/completions", json={"model": "tiny", "prompt": ["Hello", "Bonjour"], "max_tokens": 3,
                                             "stream": True})
    events = _sse_events(s)
    streamed = {0: "", 1: ""}
    for e in events:
        for c in e["choices"]:
            streamed[c["index"]] += c["text"]
    assert streamed == {c["index"]: c["text"] for c in body["choices"]}


def test_completions_token_ids_and_echo(client: httpx.Client):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 2, "echo": True})
    assert r.json()["choices"][0]["text"].startswith("Hello")
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3


def test_adapter_changes_the_answer(client: httpx.Client):
    from cluster import prompts

    messages = prompts.translation_messages("eng_Latn", "jpn_Jpan", FOX)
    base = client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 40})
    parrot = client.post("/v1/chat/completions", json={"model": "parrot", "messages": messages, "max_tokens": 40})
    assert parrot.json()["choices"][0]["message"]["content"] == DE
    assert base.json()["choices"][0]["message"]["content"] != DE


# ---- translation ----------------------------------------------------------------------------------


def test_translate_single_with_detected_source(client: httpx.Client):
    r = client.post("/v1/translate", json={"text": FOX, "target_lang": "deu"})
    assert r.status_code == 200, r.text
    body = r.json()
    (item,) = body["items"]
    assert item["source_lang"]["flores"] == "eng_Latn" and item["source_lang"]["detected"] is True
    assert 0 < item["source_lang"]["confidence"] <= 1
    assert item["target_lang"] == {"code": "de", "flores": "deu_Latn", "name": "German", "confidence": None,
                                   "detected": False}
    assert item["off_target"] in (True, False, None)
    assert body["translations"] == [item["translation"]]
    assert body["messages"][-1] == {"role": "assistant", "content": item["translation"], "name": None}


def test_translate_batch_accepts_all_code_styles(client: httpx.Client):
    texts = [FOX, "Der Hund schläft im Garten, weil es heute sehr warm ist.", "Le chat dort sur le canapé rouge."]
    for code in ("ja", "jpn", "jpn_Jpan", "Japanese"):
        body = client.post("/v1/translate", json={"texts": texts, "target_lang": code}).json()
        assert [it["index"] for it in body["items"]] == [0, 1, 2]
        assert [it["source_lang"]["flores"] for it in body["items"]] == ["eng_Latn", "deu_Latn", "fra_Latn"]
        assert {it["target_lang"]["flores"] for it in body["items"]} == {"jpn_Jpan"}
        assert body["messages"] is None  # a batch is not one conversation


def test_guard_retries_and_recovers(client: httpx.Client):
    """parrot answers the French request in German; the strict retry gets French."""
    item = client.post("/v1/translate", json={"text": FOX, "source_lang": "en", "target_lang": "fr",
                                              "model": "parrot"}).json()["items"][0]
    assert item["translation"] == FR
    assert item["off_target"] is False and item["output_lang"]["flores"] == "fra_Latn"
    g = item["guard"]
    assert g["action"] == "retried" and g["retry_strategy"] == "strict" and g["recovered"] is True
    assert g["first_output"] == DE and g["first_output_lang"] == "deu_Latn"


def test_guard_flags_when_retry_fails(client: httpx.Client):
    item = client.post("/v1/translate", json={"text": FOX, "source_lang": "eng_Latn", "target_lang": "ja",
                                              "model": "parrot"}).json()["items"][0]
    assert item["translation"] == DE
    assert item["off_target"] is True and item["output_lang"]["code"] == "de"
    assert item["guard"]["action"] == "retried" and item["guard"]["recovered"] is False


def test_guard_off_per_request_still_reports(client: httpx.Client):
    item = client.post("/v1/translate", json={"text": FOX, "source_lang": "en", "target_lang": "fr",
                                              "model": "parrot", "guard": False}).json()["items"][0]
    assert item["translation"] == DE and item["off_target"] is True
    assert item["guard"]["action"] == "off" and item["guard"]["first_output"] is None


def test_session_follow_up_uses_fix_retry(client: httpx.Client):
    first = client.post("/v1/translate", json={"text": FOX, "source_lang": "en", "target_lang": "fr",
                                               "model": "parrot", "session": True}).json()
    sid = first["session_id"]
    assert sid and first["session_expires_in_s"] > 0 and first["translations"] == [FR]
    # "More formal": parrot answers in German; the guard shows it the answer and asks for French only.
    second = client.post("/v1/translate", json={"session_id": sid, "follow_up": "formal"}).json()
    item = second["items"][0]
    assert item["translation"] == FR and item["guard"]["retry_strategy"] == "fix" and item["guard"]["recovered"]
    assert second["session_id"] == sid and second["model"] == "parrot"
    view = client.get(f"/v1/sessions/{sid}").json()
    assert view["turns"] == 2 and view["target_lang"] == "fra_Latn" and view["source_lang"] == "eng_Latn"
    assert [m["role"] for m in view["messages"]] == ["user", "assistant", "user", "assistant"]
    assert view["messages"][2]["content"] == "Make the French translation more formal."
    # The same conversation supplied by the client gives the same answer.
    history = [{"role": m["role"], "content": m["content"]} for m in first["messages"]]
    by_history = client.post("/v1/translate", json={"history": history, "follow_up": "formal", "target_lang": "fr",
                                                    "model": "parrot"}).json()
    assert by_history["translations"] == [FR] and by_history["session_id"] is None
    assert by_history["messages"][:-1] == view["messages"][:-1]
    assert client.delete(f"/v1/sessions/{sid}").json() == {"deleted": True}
    _error(client.get(f"/v1/sessions/{sid}"), 404, "session_id")


def test_session_retarget_with_free_instruction(client: httpx.Client):
    sid = client.post("/v1/translate", json={"text": FOX, "target_lang": "de", "session": True}).json()["session_id"]
    r = client.post("/v1/translate", json={"session_id": sid, "follow_up": "retarget", "target_lang": "ja"})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["target_lang"]["flores"] == "jpn_Jpan"
    r = client.post("/v1/translate", json={"session_id": sid, "instruction": "Make it sound friendlier."})
    assert r.status_code == 200
    view = client.get(f"/v1/sessions/{sid}").json()
    assert view["turns"] == 3 and view["target_lang"] == "jpn_Jpan"
    assert view["messages"][2]["content"] == "Now translate it into Japanese."
    assert view["messages"][4]["content"] == "Make it sound friendlier."


def test_languages_table(client: httpx.Client):
    data = client.get("/v1/languages").json()["data"]
    assert {"code": "de", "flores": "deu_Latn", "iso1": "de", "iso3": "deu", "name": "German", "native": "Deutsch",
            "resource": "high"} in data


# ---- validation: every bad request is a 4xx naming the field --------------------------------------


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/translate", {"text": "hello world", "target_lang": "xx"}, 422, "target_lang"),
    ("/v1/translate", {"text": "hello world", "target_lang": "de", "source_lang": "klingon"}, 422, "source_lang"),
    ("/v1/translate", {"text": "hello world"}, 422, "target_lang"),
    ("/v1/translate", {"text": "a", "texts": ["b"], "target_lang": "de"}, 422, "text"),
    ("/v1/translate", {"target_lang": "de"}, 422, "text"),
    ("/v1/translate", {"texts": [], "target_lang": "de"}, 422, "texts"),
    ("/v1/translate", {"texts": ["hello there"] * 9, "target_lang": "de"}, 413, "texts"),
    ("/v1/translate", {"text": "   ", "target_lang": "de"}, 422, "text"),
    ("/v1/translate", {"texts": ["hello there", "word " * 400], "source_lang": "en", "target_lang": "de"}, 422,
     "texts[1]"),
    ("/v1/translate", {"text": "12345 !!", "target_lang": "de"}, 422, "source_lang"),
    ("/v1/translate", {"text": "hello world", "target_lang": "de", "model": "nope"}, 404, "model"),
    ("/v1/translate", {"text": "hello world", "target_lang": "de", "colour": "red"}, 422, "colour"),
    ("/v1/translate", {"text": "hello world", "target_lang": "de", "max_tokens": 0}, 422, "max_tokens"),
    ("/v1/translate", {"text": FOX, "source_lang": "en", "target_lang": "de", "max_tokens": 5000}, 422,
     "max_tokens"),
    ("/v1/translate", {"instruction": "shorter", "target_lang": "de"}, 422, "history"),
    ("/v1/translate", {"follow_up": "formal", "session_id": "missing"}, 404, "session_id"),
    ("/v1/translate", {"follow_up": "politer", "session_id": "x"}, 422, "follow_up"),
    ("/v1/translate", {"instruction": "again", "target_lang": "de",
                       "history": [{"role": "user", "content": "hi"}]}, 422, "history"),
    ("/v1/translate", {"instruction": "again", "target_lang": "de",
                       "history": [{"role": "robot", "content": "hi"}]}, 422, "history[0].role"),
    ("/v1/translate", {"text": "hello world", "target_lang": "de", "session_id": "abc"}, 422, "session_id"),
    ("/v1/chat/completions", {"model": "tiny"}, 422, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 422, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 422, "model"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "tool", "content": "hi"}]}, 422,
     "messages[0].role"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
     422, "temperature"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 9}, 422, "n"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 999},
     422, "max_tokens"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": 999}, 422, "max_completion_tokens"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "word " * 500}]}, 422,
     "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logprobs": True},
     422, "logprobs"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "function"}]}, 422, "tools"),
    # Fields vLLM's protocol knows but xalign does not serve are refused by name, not ignored.
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "use_beam_search": True}, 422, "use_beam_search"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_object"}}, 422, "response_format"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "assistant", "content": "hi",
                                                             "tool_calls": []}]}, 422, "messages[0].tool_calls"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                              "stream_options": {"continuous_usage_stats": True}}, 422,
     "stream_options.continuous_usage_stats"),
    # vLLM's own checks: in its request model, and when it builds the sampling parameters.
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "stream_options": {"include_usage": True}}, 422, "stream_options"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2,
                              "temperature": 0}, 422, "n"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": [""]},
     422, "stop[0]"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "logprobs": 1}, 422, "logprobs"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "suffix": "!"}, 422, "suffix"),
    ("/v1/completions", {"model": "tiny", "prompt": []}, 422, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": ["a"] * 9}, 413, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": [1, 2, 10**7]}, 422, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": ""}, 422, "prompt"),
])
def test_validation_errors_name_the_field(client: httpx.Client, path: str, body: dict, status: int, param: str):
    err = _error(client.post(path, json=body), status, param)
    assert err["message"] and err["type"] in ("invalid_request_error", "not_found_error")


def test_invalid_json_and_body_limit(client: httpx.Client):
    r = client.post("/v1/translate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["request_id"]
    big = json.dumps({"text": "a" * 70_000, "target_lang": "de"})
    _error(client.post("/v1/translate", content=big, headers={"Content-Type": "application/json"}), 413, "body")

    def chunks():  # no Content-Length: the gate counts the bytes as they arrive
        yield big[:40_000].encode()
        yield big[40_000:].encode()

    _error(client.post("/v1/translate", content=chunks(), headers={"Content-Type": "application/json"}), 413, "body")


def test_unknown_route_is_json_404(client: httpx.Client):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


# ---- metrics --------------------------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_guard(client: httpx.Client, main_app: str):
    client.post("/v1/translate", json={"text": FOX, "source_lang": "en", "target_lang": "fr", "model": "parrot"})
    text = httpx.get(f"{main_app}/metrics", timeout=30).text

    def value(pattern: str) -> float:
        m = re.search(r"^" + pattern + r" ([0-9.e+]+)$", text, re.M)
        assert m, f"{pattern} not in /metrics"
        return float(m.group(1))

    assert value(r'xalign_requests_total\{route="/v1/translate",status="200"\}') >= 1
    assert value(r'xalign_requests_total\{route="/v1/translate",status="422"\}') >= 1
    assert value(r'xalign_request_latency_seconds_count\{route="/v1/chat/completions"\}') >= 1
    assert value(r'xalign_tokens_total\{kind="completion",model="parrot"\}') > 0
    assert value(r'xalign_off_target_total\{stage="first",target="fra_Latn"\}') >= 1
    assert value(r'xalign_guard_retries_total\{outcome="recovered"\}') >= 1
    assert value(r'xalign_queue_depth\{replica="[^"]+"\}') >= 0
    assert value(r'xalign_engine_ready\{replica="[^"]+"\}') == 1
    assert value(r'xalign_time_to_first_token_seconds_count\{route="/v1/chat/completions"\}') >= 1
