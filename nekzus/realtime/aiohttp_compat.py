"""Where the WebSocket hub writes beside aiohttp's WebSocket writer instead of through it.

A broadcast is framed once and the same bytes go to every client, and a connection's writer sends
its queued messages in one socket write; aiohttp's public ``send_str`` frames every message for
every client, one awaited call each, which costs the fan-out most of its speed. Writing ready-made
frames to the request's transport is sound because the hub's sockets never negotiate compression
and a server never masks, so a frame carries no state of the connection. Waiting for a paused
transport needs the protocol's private ``_drain_helper``, the coroutine aiohttp's own writers await.
tests/unit/test_aiohttp_compat.py fails when the frames aiohttp writes or that coroutine change, and
pyproject.toml bounds aiohttp's version, so an upgrade is checked here before it ships.
"""

from __future__ import annotations

import struct

from aiohttp.base_protocol import BaseProtocol


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


async def drain(protocol: BaseProtocol) -> None:
    """Wait until the transport under ``protocol`` takes writes again (at once if it does now).

    Raises ConnectionResetError when the connection is already gone.
    """
    await protocol._drain_helper()
