"""The serve recipe, the Serve config (RayService serveConfigV2), the session store's expiry, and the HTTP gate
(API key on/off, body limit, CORS off by default) on the real FastAPI app — no engine needed, so these run fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from cluster.config import RecipeError
from serving.recipe import ServeRecipe, from_args, load_serve_recipe
from serving.serve_config import IMPORT_PATH, serve_config, serve_config_yaml
from serving.sessions import SessionError, SessionStore
from xalign.recipes import load_any

REPO = Path(__file__).resolve().parents[2]


# ---- recipes and the Serve config ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["serve-default", "serve-tiny"])
def test_serve_recipes_validate(name: str):
    recipe = load_any(name)
    assert isinstance(recipe, ServeRecipe)
    assert recipe.http.cors_origins == []  # CORS off in every shipped recipe
    assert recipe.auth.api_key_env == "XALIGN_API_KEY"


def test_serve_app_args_are_a_recipe_and_overrides(tmp_path: Path):
    """The Serve application's args: a recipe (name or inline mapping) plus `key=value` overrides, the CLI's
    grammar; nothing else is accepted."""
    r = from_args({"recipe": "serve-tiny", "overrides": [f"engine.model={tmp_path}", "adapters.de=a/de",
                                                         "adapters.fr=a/fr", "limits.max_batch_items=4"]})
    assert r == load_serve_recipe("serve-tiny", [f"engine.model={tmp_path}", "adapters={de: a/de, fr: a/fr}",
                                                 "limits.max_batch_items=4"])
    assert r.adapters == {"de": "a/de", "fr": "a/fr"} and r.engine.enable_lora  # adapters imply LoRA
    assert r.base_model_name == tmp_path.name
    inline = from_args({"recipe": r.model_dump(mode="json"), "overrides": ["http.port=8123"]})
    assert inline.http.port == 8123 and inline.adapters == r.adapters
    assert from_args({}) == ServeRecipe()  # no recipe: the model's defaults
    for args, key in (({"recipe": "serve-tiny", "model": "x"}, "model"),
                      ({"recipe": "serve-tiny", "overrides": "http.port=1"}, "overrides"),
                      ({"recipe": {"kind": "serve", "engine": {"modle": "x"}}}, r"engine\.modle")):
        with pytest.raises(RecipeError, match=key):
            from_args(args)


@pytest.mark.parametrize(("override", "field"), [
    ("limits.max_input_tokens=9999", "max_input_tokens"),
    ("deployment.env_vars.MY_API_KEY=x", "MY_API_KEY"),
    ("deployment.autoscaling.min_replicas=3", "max_replicas"),
    ("http.route_prefix=api", "route_prefix"),
    ("limits.colour=red", "colour"),
    ("sampling.repetition_penalty=0", "repetition_penalty"),
    ("sampling.repetition_penalty=2.5", "repetition_penalty"),
])
def test_bad_recipe_names_the_field(override: str, field: str):
    with pytest.raises(RecipeError, match=field):
        load_serve_recipe("serve-tiny", [override])


def test_repetition_penalty_defaults_to_1_1():
    for name in ("serve-default", "serve-tiny"):
        assert load_serve_recipe(name).sampling.repetition_penalty == 1.1
    assert load_serve_recipe("serve-tiny", ["sampling.repetition_penalty=1.0"]).sampling.repetition_penalty == 1.0


def test_serve_config_is_a_rayservice_serve_config_v2():
    recipe = load_serve_recipe("serve-default", ["deployment.autoscaling.max_replicas=4"])
    cfg = serve_config(recipe)
    (app,) = cfg["applications"]
    assert app["import_path"] == IMPORT_PATH and app["route_prefix"] == "/"
    # The inline args rebuild exactly this recipe through the application builder.
    assert from_args(app["args"]) == recipe
    engine = next(d for d in app["deployments"] if d["name"] == "XalignServer")
    assert engine["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in engine
    assert cfg["http_options"]["request_timeout_s"] > recipe.limits.request_timeout_s
    text = serve_config_yaml(recipe)
    assert yaml.safe_load(text) == cfg and "XALIGN_API_KEY" in text


def test_cli_print_config():
    out = subprocess.run([sys.executable, "-m", "xalign.cli", "serve", "--recipe", "serve-tiny", "--print-config",
                          "--adapter", "de=some/adapter", "http.port=8123"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["http_options"]["port"] == 8123
    assert cfg["applications"][0]["args"]["recipe"]["adapters"] == {"de": "some/adapter"}
    # --adapter NAME=PATH is the override adapters.NAME=PATH; giving one key both ways is refused, naming it.
    for argv in (["--adapter", "de=a", "adapters.de=b"], ["--port", "1", "http.port=2"], ["--model", "m", "engine={}"]):
        out = subprocess.run([sys.executable, "-m", "xalign.cli", "serve", "--recipe", "serve-tiny", "--print-config",
                              *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "given twice" in out.stdout, out.stdout + out.stderr
        assert argv[-1].split("=")[0].split(".")[0] in out.stdout


# ---- sessions -----------------------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_cap_turns():
    now = [0.0]
    store = SessionStore(ttl_s=10, max_sessions=2, max_turns=2, clock=lambda: now[0])
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hallo"}]
    a = store.create("tiny", "eng_Latn", "deu_Latn", msgs)["session_id"]
    now[0] = 8
    assert store.get(a)["expires_in_s"] == 10  # every use restarts the idle clock
    now[0] = 15  # idle since 8: still alive at 15
    store.append(a, [*msgs, *msgs], "fra_Latn", "tiny")
    with pytest.raises(SessionError, match="limit of 2 turns") as exc:
        store.get(a, for_follow_up=True)
    assert exc.value.status == 422
    now[0] = 26
    with pytest.raises(SessionError, match="unknown or expired") as exc:
        store.get(a)
    assert exc.value.status == 404 and store.stats() == {"active": 0, "expired": 1, "evicted": 0}
    ids = [store.create("tiny", None, "deu_Latn", msgs)["session_id"] for _ in range(3)]
    assert store.stats()["evicted"] == 1 and store.delete(ids[0]) is False and store.delete(ids[2]) is True


# ---- the gate on the real FastAPI app -----------------------------------------------------------------------


def _api(api_key: str | None, cors: list[str] | None = None) -> TestClient:
    """The app's FastAPI object without an engine: /v1/languages, /openapi.json and the gate need none."""
    from serving.api import create_api
    from serving.context import ServerContext
    from serving.metrics import Metrics

    recipe = load_serve_recipe("serve-tiny", [f"http.cors_origins={cors or []}", "limits.max_body_bytes=2000"])
    metrics = Metrics("test", lambda: 0, lambda: True)
    ctx = ServerContext(recipe, generator=None, translator=None, sessions=None, metrics=metrics,  # type: ignore[arg-type]
                        api_key=api_key)
    return TestClient(create_api(ctx))


def test_auth_off_when_no_key_configured():
    with _api(None) as c:
        assert c.get("/v1/languages").status_code == 200


def test_auth_on_constant_time_key_check():
    with _api("s3cret-key") as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"},
                        {"X-API-Key": "s3cret-ke"}):
            r = c.get("/v1/languages", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["param"] == "authorization"
            assert "s3cret" not in r.text  # the key never appears in an answer
        assert c.get("/v1/languages", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/v1/languages", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/openapi.json").status_code == 200  # probes and docs stay open


def test_load_api_key_from_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from serving.middleware import load_api_key
    from serving.recipe import AuthSettings

    monkeypatch.setenv("MY_SERVE_KEY", "k-123456")
    with caplog.at_level("INFO", logger="ray.serve.xalign"):
        assert load_api_key(AuthSettings(api_key_env="MY_SERVE_KEY")) == "k-123456"
    assert "on (key from $MY_SERVE_KEY)" in caplog.text and "k-123456" not in caplog.text
    monkeypatch.delenv("MY_SERVE_KEY")
    assert load_api_key(AuthSettings(api_key_env="MY_SERVE_KEY")) is None
    with pytest.raises(RuntimeError, match="MY_SERVE_KEY"):
        load_api_key(AuthSettings(api_key_env="MY_SERVE_KEY", required=True))


def test_body_limit_before_parsing():
    with _api(None) as c:
        r = c.post("/v1/translate", content=b"x" * 3000, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["param"] == "body"


_GENERATING = {"/v1/translate": {"text": "Good morning.", "target_lang": "de"},
               "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
               "/v1/completions": {"model": "tiny", "prompt": "hi"}}


@pytest.mark.parametrize(("path", "value"), [
    *((path, v) for path in _GENERATING for v in (0, -1, "x")),
    ("/v1/translate", 2.5),  # the translate API caps it at 2; the OpenAI routes keep vLLM's range (> 0)
])
def test_bad_repetition_penalty_is_422_naming_it(path: str, value):
    """Refused by the request schema, before any engine work (this app has no engine)."""
    body = _GENERATING[path]
    with _api(None) as c:
        r = c.post(path, json={**body, "repetition_penalty": value})
    assert r.status_code == 422 and r.json()["error"]["param"] == "repetition_penalty", r.text


def test_openapi_publishes_repetition_penalty():
    """The field is in the published schema of every generating route, a valid JSON Schema that accepts what the
    API accepts."""
    import jsonschema

    with _api(None) as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("TranslateRequest", "ChatCompletionRequest", "CompletionRequest"):
        assert "repetition_penalty" in schemas[name]["properties"], name
    translate = {**schemas["TranslateRequest"], "components": spec["components"]}
    jsonschema.Draft202012Validator.check_schema(translate)
    check = jsonschema.Draft202012Validator(translate)
    base = {"text": "Good morning.", "target_lang": "de"}
    assert check.is_valid(base) and check.is_valid({**base, "repetition_penalty": 1.2})
    assert check.is_valid({**base, "repetition_penalty": None})
    for bad in (0, -1, 2.5, "x"):
        assert not check.is_valid({**base, "repetition_penalty": bad}), bad


def test_cors_off_by_default_and_on_when_configured():
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    with _api("k") as c:
        r = c.options("/v1/translate", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-origin" not in c.get("/openapi.json", headers={"Origin": "https://app.example"}).headers
    with _api("k", ["https://app.example"]) as c:
        r = c.options("/v1/translate", headers=preflight)  # answered before the key check
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options("/v1/translate", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


# ---- the chat template exported with the checkpoint ----------------------------------------------------------


def test_served_checkpoint_must_carry_xalign_template(tiny_model: Path, tmp_path: Path):
    """Prompts are encoded by cluster.prompts; a checkpoint exported with another template is refused."""
    import shutil

    from transformers import AutoTokenizer

    from cluster import prompts
    from cluster.tokenizer import stop_token_ids
    from serving.generation import TemplateMismatchError, check_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model)
    check_chat_template(tok, tiny_model)  # what cluster.tiny_model exports: accepted
    assert tok.convert_tokens_to_ids(prompts.END) in stop_token_ids(tok, tiny_model)
    other = tmp_path / "other-template"
    shutil.copytree(tiny_model, other)
    tok.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    tok.save_pretrained(other)
    with pytest.raises(TemplateMismatchError, match="chat_template is not xalign's"):
        check_chat_template(AutoTokenizer.from_pretrained(other), other)


def test_adapter_folders_are_checked_before_the_engine_starts(tmp_path: Path):
    import json

    from serving.generation import check_adapter

    with pytest.raises(FileNotFoundError, match=r"adapters\.fr: .* has no adapter_config\.json"):
        check_adapter("fr", str(tmp_path), max_rank=16)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    with pytest.raises(ValueError, match=r"adapters\.fr: LoRA rank 32 exceeds engine\.max_lora_rank=16"):
        check_adapter("fr", str(tmp_path), max_rank=16)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "trainable_token_indices": [105, 106]}))
    with pytest.raises(ValueError, match=r"serve the merged model \(export/model\) instead"):
        check_adapter("fr", str(tmp_path), max_rank=16)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "trainable_token_indices": None}))
    assert check_adapter("fr", str(tmp_path), max_rank=16) == tmp_path.resolve()
