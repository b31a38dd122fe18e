"""Server-side conversations for interactive translation, with idle expiry.

`serving.app` runs the store as its own small Serve deployment (no CPU reserved), so every engine
replica sees the same sessions whichever replica the proxy picks for a follow-up.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class SessionError(Exception):
    """A session the request cannot use: unknown/expired (404) or out of turns (422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    session_id: str
    model: str
    source_lang: str | None  # Flores code, None when never known (history-only conversations)
    target_lang: str  # Flores code of the latest turn
    messages: list[dict[str, str]]
    turns: int = 1
    last_used: float = field(default=0.0)


class SessionStore:
    """Sessions ordered by last use: expiry and eviction pop from the front, so each call is O(expired)."""

    def __init__(self, ttl_s: float, max_sessions: int, max_turns: int, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.max_sessions, self.max_turns = ttl_s, max_sessions, max_turns
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def _sweep(self) -> None:
        now = self._clock()
        while self._sessions:
            sid, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used < self.ttl_s:
                break
            del self._sessions[sid]
            self.expired += 1

    def _view(self, s: Session) -> dict[str, Any]:
        out = asdict(s)
        out["expires_in_s"] = round(max(0.0, self.ttl_s - (self._clock() - s.last_used)), 3)
        del out["last_used"]
        return out

    def _touch(self, s: Session) -> None:
        s.last_used = self._clock()
        self._sessions.move_to_end(s.session_id)

    def create(self, model: str, source_lang: str | None, target_lang: str, messages: list[dict[str, str]]) -> dict:
        self._sweep()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
            self.evicted += 1
        s = Session(secrets.token_urlsafe(18), model, source_lang, target_lang, list(messages))
        self._sessions[s.session_id] = s
        self._touch(s)
        return self._view(s)

    def get(self, session_id: str, for_follow_up: bool = False) -> dict:
        self._sweep()
        s = self._sessions.get(session_id)
        if s is None:
            raise SessionError(404, f"session_id: {session_id!r} is unknown or expired (sessions expire after "
                                    f"{self.ttl_s:g} s idle)")
        if for_follow_up and s.turns >= self.max_turns:
            raise SessionError(422, f"session_id: the session reached its limit of {self.max_turns} turns; "
                                    "start a new one")
        self._touch(s)
        return self._view(s)

    def append(self, session_id: str, messages: list[dict[str, str]], target_lang: str, model: str) -> dict:
        """Store the conversation after a follow-up (the whole list: the caller rendered the new turn)."""
        self.get(session_id, for_follow_up=True)
        s = self._sessions[session_id]
        s.messages, s.target_lang, s.model = list(messages), target_lang, model
        s.turns += 1
        self._touch(s)
        return self._view(s)

    def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def stats(self) -> dict[str, int]:
        self._sweep()
        return {"active": len(self._sessions), "expired": self.expired, "evicted": self.evicted}
