"""Helpers for the serving tests: the `parrot` LoRA adapter, Serve apps on a private cluster, and a small
Chrome DevTools Protocol client for the playground test.

The tiny model answers gibberish, so to test the off-target guard deterministically the `parrot` adapter is
trained (a few seconds, real peft + torch) to answer the test prompts in a chosen language: German for the
plain French/Japanese requests, French for the strict retry of the French one. Served through vLLM's LoRA
path, that makes "wrong language, retry, recovered" and "wrong language, retry, still wrong" real outcomes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster import prompts

FOX = "The quick brown fox jumps over the lazy dog."
DE = "Der schnelle braune Fuchs springt über den faulen Hund."
FR = "Le renard brun rapide saute par-dessus le chien paresseux."


def parrot_conversations() -> list[tuple[list[dict[str, str]], str]]:
    fr_first = prompts.translation_messages("eng_Latn", "fra_Latn", FOX)
    fr_strict = prompts.translation_messages("eng_Latn", "fra_Latn", FOX, strict=True)
    # A session's follow-up turn ("more formal") answered in German, then the guard's "fix" turn in French.
    formal = [*fr_first, {"role": "assistant", "content": FR},
              {"role": "user", "content": prompts.follow_up("formal", "fra_Latn")}]
    fixed = [*formal, {"role": "assistant", "content": DE},
             {"role": "user", "content": prompts.follow_up("fix", "fra_Latn")}]
    return [
        (fr_first, DE),
        (fr_strict, FR),
        (prompts.translation_messages("eng_Latn", "jpn_Jpan", FOX), DE),
        (prompts.translation_messages("eng_Latn", "jpn_Jpan", FOX, strict=True), DE),
        (formal, DE),
        (fixed, FR),
    ]


def train_parrot(base: Path, out: Path, max_steps: int = 900, lr: float = 1e-2, seed: int = 0) -> Path:
    """A rank-8 LoRA on every projection that memorises `parrot_conversations` (greedy, wide margins).

    Trains until greedy decoding reproduces every answer rather than for a fixed step count: float sums differ
    between CPU kinds (AVX2 vs AVX-512), so a fixed budget that suffices on one machine can fall short on CI's.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only spin against each other on a busy machine
    try:
        return _train_parrot(base, out, max_steps, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train_parrot(base: Path, out: Path, max_steps: int, lr: float, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    rows = []
    for messages, answer in parrot_conversations():
        ids, labels = prompts.encode(tok, [*messages, {"role": "assistant", "content": answer}])
        # Only the final answer is trained: the history's assistant turns (FR after the first French request)
        # would contradict the first conversation's German answer and leave greedy decoding a coin toss.
        prompt_len = len(prompts.encode_prompt(tok, messages))
        rows.append((ids, [-100] * prompt_len + labels[prompt_len:]))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(i) for i, _ in rows])[:, None]).long()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def train(n: int) -> None:
        model.train()
        for _ in range(n):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    steps, wrong = 0, ["not trained yet"]
    while wrong and steps < max_steps:
        train(50)
        steps += 50
        if not _parrot_mistakes(model, tok):
            # Past the first all-correct check, more steps widen the margins so that vLLM's kernels (other
            # float sums again) decode the same answers.
            train(50)
            steps += 50
        wrong = _parrot_mistakes(model, tok)
    # The adapter must really answer as intended (greedy), or the guard tests would test nothing.
    assert not wrong, f"parrot adapter did not learn in {steps} steps: {wrong}"
    model.save_pretrained(out)
    return out


def _parrot_mistakes(model: Any, tok: Any) -> list[str]:
    import torch

    model.eval()
    mistakes = []
    with torch.no_grad():
        for messages, answer in parrot_conversations():
            prompt = prompts.encode_prompt(tok, messages)
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)
            got = tok.decode(gen[0][len(prompt):], skip_special_tokens=True)
            if got != answer:
                mistakes.append(f"wanted {answer!r}, got {got!r}")
    return mistakes


@contextmanager
def serve_app(recipe: Any, name: str, route_prefix: str, port: int):
    """Deploy one xalign application on the running Serve instance; yields its base URL, deletes it after."""
    from ray import serve

    from serving.app import build_app

    serve.run(build_app(recipe), name=name, route_prefix=route_prefix, blocking=False)
    _wait_running(name)
    try:
        yield f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    finally:
        serve.delete(name)


def _wait_running(name: str, timeout: float = 600) -> None:
    from ray import serve

    deadline = time.time() + timeout
    while time.time() < deadline:
        app = serve.status().applications.get(name)
        status = str(app.status) if app else "missing"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED"):
            raise RuntimeError(f"application {name} failed to deploy: {app.message}")
        time.sleep(1)
    raise TimeoutError(f"application {name} did not start within {timeout:.0f} s")


def replica_children(app_name: str, child_marker: str) -> list[int]:
    """PIDs of processes under this app's engine replica whose command line contains `child_marker`."""
    import psutil

    replicas = [p for p in psutil.process_iter(["cmdline"])
                if f"ServeReplica:{app_name}:XalignServer" in " ".join(p.info["cmdline"] or [])]
    found = []
    for rep in replicas:
        for child in rep.children(recursive=True):
            try:
                if child_marker in " ".join(child.cmdline()) or child_marker in child.name():
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                continue
    return found


# ---- headless Chromium over the DevTools protocol -------------------------------------------------


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Just enough CDP to load a page, evaluate JS, wait for a condition and take a screenshot."""

    def __init__(self, binary: str, profile: Path) -> None:
        from cluster.local_cluster import free_port

        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
             f"--remote-debugging-port={self.port}", "--remote-allow-origins=*", "--window-size=1200,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.ws = self._connect()
        self._id = 0

    def _connect(self):
        import httpx
        from websockets.sync.client import connect

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                pages = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                page = next(p for p in pages if p.get("type") == "page")
                return connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
            except (httpx.HTTPError, StopIteration, OSError):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}") from None
                time.sleep(0.3)
        raise TimeoutError("chromium's DevTools endpoint did not come up")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 300) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"page condition never held: {expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
