"""The playground page at / driven in headless Chromium over the DevTools protocol: a real translation through
the page's own JS (guard retry shown), an interactive follow-up in its session, a streamed chat, a screenshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_fixtures import FOX, FR, Browser, chromium_binary

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("chromium is not installed: run `bash cluster/setup_test_tools.sh` (make test does)")
    b = Browser(binary, tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def _click_and_wait(b: Browser, button_js: str) -> str:
    b.eval(f"{button_js}.click()")
    return b.wait_for("['done', 'error'].includes(document.getElementById('result').dataset.state) && "
                      "!document.getElementById('translate').disabled && "
                      "document.getElementById('result').dataset.state")


def test_playground_translates_refines_and_chats(browser: Browser, main_app: str, api_key: str, tmp_path: Path):
    b = browser
    b.goto(f"{main_app}/")
    assert b.eval("document.title") == "xalign playground"
    # The API needs the key: type it the way a user does (the page stores it and reloads its lists).
    b.eval(f"const k = document.getElementById('api-key'); k.value = {json.dumps(api_key)};"
           "k.dispatchEvent(new Event('change'))")
    b.wait_for("document.body.dataset.ready === '1' && document.getElementById('model').options.length === 2")
    assert b.wait_for("document.getElementById('health').textContent.startsWith('ready')")

    # Translate en -> fr with the parrot adapter: its first answer is German, the guard's retry French.
    b.eval(f"""(() => {{
        document.getElementById('model').value = 'parrot';
        document.getElementById('src').value = 'en';
        document.getElementById('tgt').value = 'fr';
        document.getElementById('text').value = {json.dumps(FOX)};
    }})()""")
    assert _click_and_wait(b, "document.getElementById('translate')") == "done", b.eval(
        "document.getElementById('error').textContent")
    shown = b.eval("""(() => { const t = (id) => document.getElementById(id).textContent;
        return {translation: t('translation'), source: t('source-lang'), output: t('output-lang'),
                off: t('off-target'), guard: t('guard-action'), detail: t('guard-detail')}; })()""")
    assert shown["translation"] == FR
    assert shown["source"].startswith("English (en)") and shown["output"].startswith("French (fr)")
    assert shown["off"] == "on target" and shown["guard"] == "retried → recovered"
    assert "rejected" in shown["detail"]
    assert b.eval("document.getElementById('refine-box').hidden") is False

    # A follow-up in the page's server-side session: "More formal" (parrot: German, then the guard's fix).
    assert _click_and_wait(b, "document.querySelector('.follow-up[data-kind=formal]')") == "done"
    assert b.eval("document.getElementById('translation').textContent") == FR
    assert b.eval("document.querySelectorAll('#turns li').length") == 2
    b.screenshot(tmp_path / "playground-translate.png")

    # Chat tab: a streamed answer from the base model.
    b.eval("document.getElementById('tab-chat').click(); document.getElementById('model').value = 'tiny';"
           "document.getElementById('chat-input').value = 'Hello'; document.getElementById('chat-send').click()")
    state = b.wait_for("(() => { const li = document.querySelector('#chat-log li.assistant');"
                       "return li && ['done', 'error'].includes(li.dataset.state) && li.dataset.state; })()")
    assert state == "done", b.eval("document.getElementById('error').textContent")
    # The streamed answer went into the page's conversation (the tiny model's text itself may be empty).
    assert b.eval("state.chat.map((m) => m.role)") == ["user", "assistant"]
    assert b.eval("document.getElementById('error').hidden") is True
    shot = b.screenshot(tmp_path / "playground-chat.png")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
