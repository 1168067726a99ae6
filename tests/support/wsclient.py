"""A small WebSocket test client: read messages by type with a deadline."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class WS:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = 15) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a message, got {msg.type} {msg.data!r}"
        message: dict[str, Any] = json.loads(msg.data)
        self.seen.append(message)
        return message

    async def until(self, message_type: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The next message of ``message_type`` whose data has the given values (others are kept in seen)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if message["type"] == message_type and all(
                    message["data"].get(k) == v for k, v in match.items()
                ):
                    return message

    async def send(self, message_type: str, **data: Any) -> None:
        await self.ws.send_json({"type": message_type, "data": data})

    async def closed(self, timeout: float = 15) -> int | None:
        """Wait for the server to close; the close code."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return self.ws.close_code
                if msg.type is aiohttp.WSMsgType.ERROR:
                    return self.ws.close_code
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.seen.append(json.loads(msg.data))
