"""The Translator without Ray: the replica's real Generator (vLLM's AsyncLLM on the tiny model with the `parrot`
LoRA, see serve_fixtures.py) driven directly on one event loop, with the session store answering in-process.

parrot answers the plain French request in German and its strict retry in French, the Japanese request in
German either way, and a "more formal" follow-up in German but its "fix" retry in French; so every guard
outcome (recovered, still off-target, flagged, off) is a real generation checked by real language ID.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from serve_fixtures import DE, FOX, FR
from test_sessions import LocalHandle

from cluster import prompts
from serving import errors
from serving.generation import Deadline, Generator
from serving.metrics import Metrics
from serving.recipe import GuardSettings, LimitSettings, ServeRecipe
from serving.session_client import SessionClient
from serving.translate_schemas import TranslateRequest, TranslateResponse
from serving.translation import Translator

pytestmark = pytest.mark.slow

FR_FIRST = prompts.translation_messages("eng_Latn", "fra_Latn", FOX)
FR_STRICT = prompts.translation_messages("eng_Latn", "fra_Latn", FOX, strict=True)
FORMAL_FR = "Make the French translation more formal."
GERMAN = "Der Hund schläft im Garten, weil es heute sehr warm ist."
FRENCH = "Le chat dort sur le canapé rouge."


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for the module: AsyncLLM binds its output handler to the loop it was started on."""
    loop = asyncio.new_event_loop()
    yield loop
    # What asyncio.run does on exit: the engine's cancelled output handler must finish, or its ZeroMQ socket stays
    # open and the context's finalizer blocks interpreter exit.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture(scope="module")
def generator(loop: asyncio.AbstractEventLoop, main_recipe: ServeRecipe) -> Iterator[Generator]:
    """The replica's engine, started in this process with the replica's environment (restored afterwards)."""
    saved = dict(os.environ)
    os.environ.update(main_recipe.deployment.env_vars)

    async def start() -> Generator:
        gen = Generator(main_recipe)
        await gen.load_adapters()
        return gen

    try:
        gen = loop.run_until_complete(start())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield gen
    finally:
        gen.shutdown()


class Bench:
    """A Translator over the shared engine, with its own metrics and session store."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gen: Generator, guard: GuardSettings | None = None,
                 limits: LimitSettings | None = None, max_turns: int = 8) -> None:
        from serving.app import SessionStoreDeployment

        recipe = gen.recipe
        self.loop, self.gen = loop, gen
        self.store = SessionStoreDeployment.func_or_class(recipe.sessions.ttl_s, recipe.sessions.max_sessions,
                                                          max_turns)
        self.metrics = Metrics("test", gen.unfinished, lambda: not gen.dead)
        self.translator = Translator(gen, SessionClient(LocalHandle(self.store)), guard or recipe.guard,
                                     limits or recipe.limits, self.metrics)
        self.calls = 0

    def translate(self, **body: Any) -> TranslateResponse:
        self.calls += 1
        req = TranslateRequest.model_validate(body)
        return self.loop.run_until_complete(self.translator.translate(req, f"t{self.calls}", Deadline(120)))

    def refused(self, **body: Any) -> errors.APIError:
        with pytest.raises(errors.APIError) as exc:
            self.translate(**body)
        return exc.value

    def session(self, sid: str) -> dict[str, Any]:
        return self.store.store.get(sid)

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"xalign_{name}_total", labels) or 0.0

    def generated(self) -> float:
        """Answers generated so far, all targets together."""
        return sum(s.value for m in self.metrics.registry.collect() if m.name == "xalign_translations"
                   for s in m.samples if s.name.endswith("_total"))

    def prompt_tokens(self, *conversations: list[dict[str, str]]) -> int:
        return sum(len(self.gen.encode_chat(c)) for c in conversations)


@pytest.fixture
def bench(loop: asyncio.AbstractEventLoop, generator: Generator) -> Bench:
    return Bench(loop, generator)


def _turns(resp: TranslateResponse) -> list[dict[str, str]]:
    assert resp.messages is not None
    return [{"role": m.role, "content": m.text()} for m in resp.messages]


# ---- fresh translations ------------------------------------------------------------------------------------


def test_fresh_translation_detects_the_source_and_returns_the_conversation(bench: Bench):
    resp = bench.translate(text=FOX, target_lang="deu", guard=False, max_tokens=12)
    (item,) = resp.items
    assert resp.model == "tiny" and resp.id == "tr-t1" and resp.translations == [item.translation]
    assert item.source_lang is not None and item.source_lang.flores == "eng_Latn" and item.source_lang.detected
    assert item.target_lang.flores == "deu_Latn" and not item.target_lang.detected
    messages = prompts.translation_messages("eng_Latn", "deu_Latn", FOX)
    assert _turns(resp) == [*messages, {"role": "assistant", "content": item.translation}]
    assert item.guard.action == "off" and item.guard.first_output is None
    assert item.usage.prompt_tokens == resp.usage.prompt_tokens == bench.prompt_tokens(messages)
    assert 0 < item.usage.completion_tokens <= 12
    assert resp.session_id is None and bench.count("translations", target="deu_Latn") == 1


def test_batch_items_keep_their_order_and_sources(bench: Bench):
    resp = bench.translate(texts=[FOX, GERMAN, FRENCH], target_lang="ja", guard=False, max_tokens=8)
    assert [it.index for it in resp.items] == [0, 1, 2]
    assert [it.source_lang.flores for it in resp.items if it.source_lang] == ["eng_Latn", "deu_Latn", "fra_Latn"]
    assert resp.translations == [it.translation for it in resp.items]
    assert resp.messages is None and resp.session_id is None  # a batch is not one conversation
    assert resp.usage.prompt_tokens == sum(it.usage.prompt_tokens for it in resp.items)
    assert resp.usage.completion_tokens == sum(it.usage.completion_tokens for it in resp.items)


# ---- decoding defaults -------------------------------------------------------------------------------------


def test_server_repetition_penalty_applies_unless_the_request_sets_one(bench: Bench):
    """The recipe's `sampling.repetition_penalty` (1.1) is the default of every route; a request's value wins."""
    from serving.context import ServerContext
    from serving.openai_protocol import ChatCompletionRequest, CompletionRequest
    from serving.routes.openai import _params

    gen = bench.gen
    assert gen.recipe.sampling.repetition_penalty == 1.1
    # /v1/translate: the parameters the Translator builds.
    assert gen.sampling(max_tokens=8).repetition_penalty == 1.1
    assert gen.sampling(max_tokens=8, repetition_penalty=1.0).repetition_penalty == 1.0
    # OpenAI routes: vLLM's to_sampling_params over the server's defaults, as the route calls it.
    ctx = ServerContext(gen.recipe, gen, bench.translator, None, bench.metrics, None)  # type: ignore[arg-type]
    ids = gen.encode_chat(FR_FIRST)
    chat = {"model": "tiny", "messages": FR_FIRST}
    assert _params(ctx, ChatCompletionRequest.model_validate(chat), ids, 8, "max_tokens").repetition_penalty == 1.1
    own = ChatCompletionRequest.model_validate({**chat, "repetition_penalty": 1.3})
    assert _params(ctx, own, ids, 8, "max_tokens").repetition_penalty == 1.3
    plain = CompletionRequest.model_validate({"model": "tiny", "prompt": "Hello"})
    assert _params(ctx, plain, gen.encode_text("Hello"), 8, "max_tokens").repetition_penalty == 1.1
    # And the request's value reaches the engine: the tiny model's greedy answer changes with the penalty,
    # and leaving it out answers exactly as the server's 1.1 does.
    body = {"text": FOX, "source_lang": "en", "target_lang": "de", "guard": False, "max_tokens": 16}
    answers = {rp: bench.translate(**body, repetition_penalty=rp).translations[0] for rp in (1.0, 1.1, 2.0)}
    assert bench.translate(**body).translations[0] == answers[1.1]
    assert len(set(answers.values())) > 1, answers


# ---- the guard's policy ------------------------------------------------------------------------------------


def test_off_target_answer_is_retried_strictly_and_recovers(bench: Bench):
    resp = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot")
    (item,) = resp.items
    assert item.translation == FR and item.off_target is False
    assert item.output_lang is not None and item.output_lang.flores == "fra_Latn"
    g = item.guard
    assert (g.action, g.retry_strategy, g.recovered) == ("retried", "strict", True)
    assert (g.first_output, g.first_output_lang) == (DE, "deu_Latn")
    # Both generations are billed; the conversation handed back keeps the user's plain instruction.
    assert item.usage.prompt_tokens == bench.prompt_tokens(FR_FIRST, FR_STRICT)
    assert _turns(resp) == [*FR_FIRST, {"role": "assistant", "content": FR}]
    assert bench.count("guard_retries", outcome="recovered") == 1
    assert bench.count("off_target", stage="first", target="fra_Latn") == 1
    assert bench.count("off_target", stage="final", target="fra_Latn") == 0


def test_retry_that_stays_off_target_is_reported(bench: Bench):
    (item,) = bench.translate(text=FOX, source_lang="eng_Latn", target_lang="ja", model="parrot").items
    assert item.translation == DE and item.off_target is True
    assert item.output_lang is not None and item.output_lang.code == "de"
    assert (item.guard.action, item.guard.retry_strategy, item.guard.recovered) == ("retried", "strict", False)
    assert bench.count("guard_retries", outcome="still_off_target") == 1
    assert bench.count("off_target", stage="final", target="jpn_Jpan") == 1


def test_guard_off_per_request_still_reports_the_language(bench: Bench):
    (item,) = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot", guard=False).items
    assert item.translation == DE and item.off_target is True
    assert item.guard.checked and item.guard.action == "off" and item.guard.first_output is None
    assert bench.count("off_target", stage="first", target="fra_Latn") == 1
    assert bench.count("guard_retries", outcome="recovered") == 0


def test_retry_disabled_flags_the_answer(loop: asyncio.AbstractEventLoop, generator: Generator):
    bench = Bench(loop, generator, guard=GuardSettings(retry=False))
    (item,) = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot").items
    assert item.translation == DE and item.off_target is True
    assert item.guard.action == "flagged" and item.guard.retry_strategy is None
    assert item.usage.prompt_tokens == bench.prompt_tokens(FR_FIRST)  # one generation only


def test_no_room_for_the_retry_prompt_flags_instead(loop: asyncio.AbstractEventLoop, generator: Generator):
    """The strict prompt is longer than the first: with the input limit at the first prompt's length, the guard
    cannot re-ask and reports the off-target answer."""
    limit = len(generator.encode_chat(FR_FIRST))
    bench = Bench(loop, generator, limits=generator.recipe.limits.model_copy(update={"max_input_tokens": limit}))
    (item,) = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot").items
    assert item.translation == DE and item.guard.action == "flagged"
    assert bench.count("guard_retries", outcome="recovered") == 0


def test_fix_strategy_shows_the_model_its_answer(loop: asyncio.AbstractEventLoop, generator: Generator):
    bench = Bench(loop, generator, guard=GuardSettings(strategy="fix"))
    (item,) = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot").items
    assert item.guard.action == "retried" and item.guard.retry_strategy == "fix" and item.guard.first_output == DE
    fix = [*FR_FIRST, {"role": "assistant", "content": DE},
           {"role": "user", "content": "That answer is not in French. Translate the text into French only."}]
    assert item.usage.prompt_tokens == bench.prompt_tokens(FR_FIRST, fix)


# ---- interactive refinement --------------------------------------------------------------------------------


def test_session_follow_up_is_guarded_with_fix_and_stored(bench: Bench):
    first = bench.translate(text=FOX, source_lang="en", target_lang="fr", model="parrot", session=True)
    sid = first.session_id
    assert sid is not None and first.session_expires_in_s == bench.gen.recipe.sessions.ttl_s
    assert bench.session(sid)["messages"] == [*FR_FIRST, {"role": "assistant", "content": FR}]
    # "More formal" names no model: the session's (parrot) answers, in German; the fix retry gets French.
    second = bench.translate(session_id=sid, follow_up="formal")
    (item,) = second.items
    assert second.model == "parrot" and second.session_id == sid
    assert item.translation == FR and item.guard.retry_strategy == "fix" and item.guard.recovered is True
    assert item.source_lang is not None and item.source_lang.flores == "eng_Latn"  # the session's source
    conversation = [*FR_FIRST, {"role": "assistant", "content": FR}, {"role": "user", "content": FORMAL_FR},
                    {"role": "assistant", "content": FR}]
    assert _turns(second) == conversation
    stored = bench.session(sid)
    assert (stored["turns"], stored["target_lang"], stored["source_lang"]) == (2, "fra_Latn", "eng_Latn")
    assert stored["messages"] == conversation and stored["model"] == "parrot"
    # The same conversation sent by the client: the same answer, nothing stored.
    by_history = bench.translate(history=conversation[:2], follow_up="formal", target_lang="fr", model="parrot")
    assert by_history.translations == [FR] and by_history.session_id is None
    assert _turns(by_history) == conversation and by_history.items[0].source_lang is None


def test_follow_ups_build_the_conversation_from_the_prompt_module(loop: asyncio.AbstractEventLoop,
                                                                   generator: Generator):
    bench = Bench(loop, generator, max_turns=4)
    sid = bench.translate(text=FOX, target_lang="de", session=True, guard=False, max_tokens=6).session_id
    assert sid is not None
    retarget = bench.translate(session_id=sid, follow_up="retarget", target_lang="ja", guard=False, max_tokens=6)
    assert _turns(retarget)[-2] == {"role": "user", "content": "Now translate it into Japanese."}
    assert retarget.items[0].target_lang.flores == "jpn_Jpan"
    assert bench.session(sid)["target_lang"] == "jpn_Jpan"
    # The target now defaults to the session's latest one.
    shorter = bench.translate(session_id=sid, follow_up="shorter", guard=False, max_tokens=6)
    assert _turns(shorter)[-2] == {"role": "user", "content": "Make the Japanese translation shorter."}
    free = bench.translate(session_id=sid, instruction="Make it sound friendlier.", guard=False, max_tokens=6)
    turns = _turns(free)
    assert [m["role"] for m in turns] == ["user", "assistant"] * 4
    assert turns[:-1] == [*_turns(shorter), {"role": "user", "content": "Make it sound friendlier."}]
    assert bench.session(sid)["turns"] == 4
    # The fourth turn was the last one this store allows.
    refused = bench.refused(session_id=sid, follow_up="formal", guard=False, max_tokens=6)
    assert (refused.status, refused.param) == (422, "session_id") and "limit of 4 turns" in refused.message


def test_history_follow_up_in_another_language(bench: Bench):
    history = [*prompts.translation_messages("eng_Latn", "deu_Latn", FOX), {"role": "assistant", "content": DE}]
    resp = bench.translate(history=history, follow_up="formal", target_lang="de", source_lang="en", guard=False,
                           max_tokens=6)
    assert _turns(resp)[:-1] == [*history, {"role": "user", "content": "Make the German translation more formal."}]
    assert resp.items[0].source_lang is not None and resp.items[0].source_lang.flores == "eng_Latn"


# ---- refusals, all before any generation --------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "param", "says"), [
    ({"text": FOX, "target_lang": "klingon"}, 422, "target_lang", "unknown language code 'klingon'"),
    ({"text": FOX, "target_lang": "de", "source_lang": "xx"}, 422, "source_lang", "unknown language code 'xx'"),
    ({"texts": [FOX, "  "], "target_lang": "de"}, 422, "texts[1]", "texts[1]: empty text"),
    ({"texts": [FOX] * 9, "target_lang": "de"}, 413, "texts", "9 items; the limit is 8"),
    ({"text": "12345 !!", "target_lang": "de"}, 422, "source_lang", "too short to identify"),
    ({"text": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.", "target_lang": "de"}, 422,
     "source_lang", "identified as 'el', not in the table"),
    ({"text": FOX * 60, "source_lang": "en", "target_lang": "de"}, 422, "text", "limit is 384"),
    ({"text": FOX, "target_lang": "de", "max_tokens": 1000}, 422, "max_tokens", "above the limit 128"),
    ({"text": FOX, "target_lang": "de", "model": "nope"}, 404, "model", "'nope' is not served here"),
    ({"history": FR_FIRST, "follow_up": "formal", "target_lang": "fr"}, 422, "history",
     "must end with the assistant's last answer"),
    ({"history": [*FR_FIRST, {"role": "assistant", "content": FR}], "instruction": "  ", "target_lang": "fr"}, 422,
     "instruction", "empty follow-up"),
    ({"session_id": "missing", "follow_up": "formal"}, 404, "session_id", "'missing' is unknown or expired"),
    ({"text": "\u200b\ufeff \u2060\u200d", "target_lang": "de"}, 422, "text", "invisible characters"),
    ({"texts": [FOX, "\u0301\u200c"], "target_lang": "de"}, 422, "texts[1]", "texts[1]: empty text"),
    ({"text": FOX, "source_lang": "en", "target_lang": "eng_Latn"}, 422, "target_lang", "same language as"),
    ({"text": FOX, "target_lang": "en"}, 422, "source_lang", "text was detected as English"),
    ({"history": [*FR_FIRST, {"role": "assistant", "content": FR}], "instruction": "\u200b", "target_lang": "fr"},
     422, "instruction", "empty follow-up"),
])
def test_bad_requests_name_the_field(bench: Bench, body: dict[str, Any], status: int, param: str, says: str):
    err = bench.refused(**body)
    assert (err.status, err.param) == (status, param) and says in err.message, err.message
    assert bench.generated() == 0


# ---- what the engine refuses itself, and what a failed request leaves behind --------------------------------


def _depth_returns_to_zero(gen: Generator, loop: asyncio.AbstractEventLoop, timeout: float = 10.0) -> int:
    """The engine's unfinished requests once aborts have been processed (polled: aborting is asynchronous)."""
    deadline = loop.time() + timeout
    while gen.unfinished() and loop.time() < deadline:
        loop.run_until_complete(asyncio.sleep(0.05))
    return gen.unfinished()


def test_engine_refusal_is_a_4xx_and_leaves_no_request_behind(loop: asyncio.AbstractEventLoop,
                                                              generator: Generator):
    """A seed past 64 bits, sent straight to the engine (the API refuses it earlier): vLLM registers the request,
    then its transport fails to encode the seed. That used to be a 500 and a request stuck in the queue."""
    from vllm import SamplingParams

    ids = generator.encode_text("Hello")
    for seed in (2**64, -(2**63) - 1):
        params = SamplingParams(max_tokens=4, temperature=1.0, seed=seed)
        with pytest.raises(errors.APIError) as caught:
            loop.run_until_complete(generator.generate(ids, params, None, f"huge-seed-{seed}", Deadline(60)))
        assert caught.value.status == 422 and "refused" in caught.value.message, caught.value.message
        assert _depth_returns_to_zero(generator, loop) == 0
    ok = loop.run_until_complete(generator.generate(ids, SamplingParams(max_tokens=4, temperature=1.0, seed=2**63 - 1),
                                                    None, "max-seed", Deadline(60)))
    assert ok.completion_tokens == 4


def test_deadline_and_cancellation_abort_the_engine_request(loop: asyncio.AbstractEventLoop, generator: Generator):
    """A request that runs out of time, and one whose caller goes away (a client disconnect cancels the handler),
    both stop in the engine: nothing is left queued."""
    from vllm import SamplingParams

    ids = generator.encode_text("Once upon a time")
    long = SamplingParams(max_tokens=generator.max_model_len - len(ids), temperature=1.0, ignore_eos=True, seed=1)
    with pytest.raises(errors.APIError) as caught:
        loop.run_until_complete(generator.generate(ids, long, None, "too-slow", Deadline(0.5)))
    assert caught.value.status == 504
    assert _depth_returns_to_zero(generator, loop) == 0

    async def cancelled() -> None:
        task = asyncio.ensure_future(generator.generate(ids, long, None, "walked-away", Deadline(120)))
        while not generator.unfinished():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    loop.run_until_complete(cancelled())
    assert _depth_returns_to_zero(generator, loop) == 0

    async def stream_dropped() -> None:
        stream = generator.stream(ids, long, None, "stream-dropped", Deadline(120))
        await stream.__anext__()
        await stream.aclose()  # what Starlette does when the client of an SSE response disconnects

    loop.run_until_complete(stream_dropped())
    assert _depth_returns_to_zero(generator, loop) == 0

