"""A replica's handle on the SessionStore deployment (interactive translation sessions)."""

from __future__ import annotations

from typing import Any

from serving import errors


class SessionClient:
    """Calls the SessionStore deployment; its refusals come back as data and become APIErrors here."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def call(self, method: str, *args: Any) -> dict[str, Any]:
        reply = await self.handle.call.remote(method, *args)
        if "error" in reply:
            status = int(reply["status"])
            if status == 404:
                raise errors.not_found("session_id", reply["error"])
            raise errors.invalid("session_id", reply["error"], status=status)
        return reply["ok"]
