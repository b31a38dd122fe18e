"""`serving.client.TranslateClient` against a real loopback HTTP server that fails the way a replaced replica
does: transient 5xx answers are retried until the replacement answers; 4xx answers are not retried."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.client import APIRequestError, TranslateClient


class Flaky(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, body) of the server's script, then 200 for good."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        script: list[tuple[int, str]] = self.server.script  # type: ignore[attr-defined]
        self.server.calls += 1  # type: ignore[attr-defined]
        status, body = script.pop(0) if script else (200, json.dumps({"items": [{"translation": "Hallo"}]}))
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body.startswith("{") else "text/plain")
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    srv.script, srv.calls = [], 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_transient_5xx_are_retried_until_the_replacement_answers(server):
    dead = json.dumps({"error": {"message": "the engine died", "code": "engine_dead"}, "request_id": "r1"})
    server.script += [(500, "Internal Server Error"), (503, dead)]  # the proxy's plain 500, then the app's 503
    with TranslateClient(_url(server), timeout=10) as client:
        answer = client.translate(["Hello"], "de")
    assert answer["items"][0]["translation"] == "Hallo"
    assert server.calls == 3


def test_client_errors_are_not_retried_and_name_the_field(server):
    bad = json.dumps({"error": {"message": "target_lang: unknown language 'xx'", "param": "target_lang"},
                      "request_id": "r2"})
    server.script += [(422, bad)]
    with TranslateClient(_url(server), timeout=10) as client, pytest.raises(APIRequestError) as err:
        client.translate(["Hello"], "xx")
    assert err.value.status == 422 and "target_lang" in str(err.value) and "r2" in str(err.value)
    assert server.calls == 1


def test_gives_up_after_four_tries(server):
    server.script += [(503, "{}")] * 5
    with TranslateClient(_url(server), timeout=10) as client, pytest.raises(APIRequestError, match="HTTP 503"):
        client.translate(["Hello"], "de")
    assert server.calls == 4
