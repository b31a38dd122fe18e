"""The session store and the replica's client for it, without Ray.

The store takes its clock as a constructor argument, so expiry is tested by moving that clock rather than by
sleeping. The client is driven through the store deployment's own class (`SessionStoreDeployment`, the body
that Serve wraps) behind `LocalHandle`, a stand-in for Ray's DeploymentHandle that only replaces the transport:
the refusal-as-data protocol on both ends is the real code.
"""

from __future__ import annotations

import asyncio
import string
from types import SimpleNamespace
from typing import Any

import pytest

from serving import errors
from serving.session_client import SessionClient
from serving.sessions import SessionError, SessionStore

FIRST = [{"role": "user", "content": "Translate the following text from English into German.\n\nHello."},
         {"role": "assistant", "content": "Hallo."}]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _store(clock: Clock, ttl_s: float = 60, max_sessions: int = 3, max_turns: int = 3) -> SessionStore:
    return SessionStore(ttl_s=ttl_s, max_sessions=max_sessions, max_turns=max_turns, clock=clock)


# ---- the store -----------------------------------------------------------------------------------------------


def test_create_returns_the_view(clock: Clock):
    store = _store(clock)
    view = store.create("tiny", "eng_Latn", "deu_Latn", FIRST)
    sid = view.pop("session_id")
    assert view == {"model": "tiny", "source_lang": "eng_Latn", "target_lang": "deu_Latn", "messages": FIRST,
                    "turns": 1, "expires_in_s": 60}
    assert len(sid) >= 24 and set(sid) <= set(string.ascii_letters + string.digits + "-_")  # URL-safe
    assert store.get(sid)["messages"] == FIRST


def test_ids_are_unique_and_stored_messages_are_copies(clock: Clock):
    store = _store(clock, max_sessions=50)
    msgs = [dict(m) for m in FIRST]
    ids = {store.create("tiny", None, "deu_Latn", msgs)["session_id"] for _ in range(20)}
    assert len(ids) == 20
    msgs.append({"role": "user", "content": "changed afterwards"})
    assert all(len(store.get(sid)["messages"]) == 2 for sid in ids)


def test_idle_expiry_counts_from_the_last_use(clock: Clock):
    store = _store(clock, ttl_s=60)
    sid = store.create("tiny", "eng_Latn", "deu_Latn", FIRST)["session_id"]
    clock.now += 45
    assert store.get(sid)["expires_in_s"] == 60  # a use restarts the idle clock
    clock.now += 59.5
    assert store.stats()["active"] == 1
    clock.now += 0.5  # exactly ttl_s idle: gone
    with pytest.raises(SessionError) as exc:
        store.get(sid)
    assert exc.value.status == 404
    assert str(exc.value) == f"session_id: {sid!r} is unknown or expired (sessions expire after 60 s idle)"
    assert store.stats() == {"active": 0, "expired": 1, "evicted": 0}


def test_stats_do_not_keep_sessions_alive(clock: Clock):
    store = _store(clock, ttl_s=60)
    store.create("tiny", None, "deu_Latn", FIRST)
    clock.now += 20
    assert store.stats()["active"] == 1  # stats sweep but do not touch
    clock.now += 40
    assert store.stats() == {"active": 0, "expired": 1, "evicted": 0}


def test_expired_sessions_are_swept_by_any_call(clock: Clock):
    store = _store(clock, ttl_s=10, max_sessions=10)
    old = [store.create("tiny", None, "deu_Latn", FIRST)["session_id"] for _ in range(3)]
    clock.now += 5
    fresh = store.create("tiny", None, "deu_Latn", FIRST)["session_id"]
    clock.now += 5  # the first three reach ttl, the fourth is 5 s idle
    store.create("tiny", None, "deu_Latn", FIRST)
    assert store.stats() == {"active": 2, "expired": 3, "evicted": 0}
    assert store.get(fresh)["expires_in_s"] == 10
    assert all(store.delete(sid) is False for sid in old)


def test_least_recently_used_is_evicted_beyond_max_sessions(clock: Clock):
    store = _store(clock, max_sessions=2)
    a = store.create("tiny", None, "deu_Latn", FIRST)["session_id"]
    clock.now += 1
    b = store.create("tiny", None, "deu_Latn", FIRST)["session_id"]
    clock.now += 1
    store.get(a)  # a is now the most recently used: b goes first
    c = store.create("tiny", None, "deu_Latn", FIRST)["session_id"]
    assert store.stats() == {"active": 2, "expired": 0, "evicted": 1}
    with pytest.raises(SessionError, match="unknown or expired"):
        store.get(b)
    assert store.get(a) and store.get(c)


def test_append_replaces_the_conversation_and_counts_turns(clock: Clock):
    store = _store(clock, max_turns=3)
    sid = store.create("tiny", "eng_Latn", "deu_Latn", FIRST)["session_id"]
    second = [*FIRST, {"role": "user", "content": "Now translate it into French."},
              {"role": "assistant", "content": "Bonjour."}]
    clock.now += 30
    view = store.append(sid, second, "fra_Latn", "parrot")
    assert view == {"session_id": sid, "model": "parrot", "source_lang": "eng_Latn", "target_lang": "fra_Latn",
                    "messages": second, "turns": 2, "expires_in_s": 60}
    store.append(sid, second, "fra_Latn", "parrot")
    # Three turns reached: a follow-up is refused (422), but the session can still be read and deleted.
    with pytest.raises(SessionError) as exc:
        store.get(sid, for_follow_up=True)
    assert exc.value.status == 422 and "limit of 3 turns" in str(exc.value)
    with pytest.raises(SessionError, match="limit of 3 turns"):
        store.append(sid, second, "fra_Latn", "parrot")
    assert store.get(sid)["turns"] == 3
    assert store.delete(sid) is True and store.delete(sid) is False


def test_append_to_an_unknown_session_is_404(clock: Clock):
    with pytest.raises(SessionError) as exc:
        _store(clock).append("nope", FIRST, "deu_Latn", "tiny")
    assert exc.value.status == 404 and "'nope'" in str(exc.value)


# ---- the replica's client, through the deployment body -------------------------------------------------------


class LocalHandle:
    """`await handle.call.remote(...)` answered in-process by the deployment's class, as Serve would call it."""

    def __init__(self, deployment: Any) -> None:
        async def remote(method: str, *args: Any) -> dict[str, Any]:
            return deployment.call(method, *args)

        self.call = SimpleNamespace(remote=remote)


def _client(ttl_s: float = 60, max_sessions: int = 10, max_turns: int = 2) -> SessionClient:
    from serving.app import SessionStoreDeployment

    body = SessionStoreDeployment.func_or_class(ttl_s, max_sessions, max_turns)
    return SessionClient(LocalHandle(body))


def test_client_returns_the_stores_answers():
    client = _client()

    async def flow() -> tuple[dict, dict, bool]:
        made = await client.call("create", "tiny", "eng_Latn", "deu_Latn", FIRST)
        got = await client.call("get", made["session_id"], True)
        return made, got, await client.call("delete", made["session_id"])

    made, got, deleted = asyncio.run(flow())
    assert got == made and made["turns"] == 1 and deleted is True


def test_client_turns_refusals_into_api_errors_naming_session_id():
    client = _client(max_turns=1)

    async def refusal(method: str, *args: Any) -> errors.APIError:
        with pytest.raises(errors.APIError) as exc:
            await client.call(method, *args)
        return exc.value

    async def flow() -> list[errors.APIError]:
        sid = (await client.call("create", "tiny", None, "deu_Latn", FIRST))["session_id"]
        return [await refusal("get", "missing"), await refusal("get", sid, True), await refusal("stop", sid)]

    missing, out_of_turns, unknown_op = asyncio.run(flow())
    assert (missing.status, missing.param, missing.type, missing.code) == (404, "session_id", "not_found_error",
                                                                           "not_found")
    assert "'missing' is unknown or expired" in missing.message
    assert (out_of_turns.status, out_of_turns.param) == (422, "session_id")
    assert "limit of 1 turns" in out_of_turns.message
    assert (unknown_op.status, unknown_op.param) == (400, "session_id")
    assert unknown_op.message == "unknown session operation 'stop'"
