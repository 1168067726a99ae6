"""What nekzus/aiohttp_compat.py relies on in aiohttp.

These fail on an aiohttp release whose server frames differ from the hub's ready-made ones, whose
``compress=False`` sockets negotiate compression anyway, or whose protocol stops offering
``_drain_helper`` as the wait for a paused transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import WebSocketWriter
from aiohttp.test_utils import TestClient

from nekzus.realtime.aiohttp_compat import drain, text_frame


class Recorder(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
async def test_a_ready_made_frame_is_what_aiohttps_server_writer_writes(size: int) -> None:
    transport = Recorder()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), transport, compress=0)
    payload = bytes(i % 251 for i in range(size))
    await writer.send_frame(payload, WSMsgType.TEXT)
    assert bytes(transport.written) == text_frame(payload)


async def test_an_uncompressed_socket_refuses_a_clients_offer_of_compression(
    aiohttp_client: Any,
) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    async with client.ws_connect("/", compress=15) as ws:
        assert ws.compress == 0


async def test_drain_waits_while_the_transport_is_paused() -> None:
    protocol = BaseProtocol(asyncio.get_running_loop())
    protocol.connection_made(Recorder())
    await asyncio.wait_for(drain(protocol), 1)  # not paused: at once
    protocol.pause_writing()
    assert protocol.writing_paused
    waiting = asyncio.create_task(drain(protocol))
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done
    protocol.resume_writing()
    await asyncio.wait_for(waiting, 1)


async def test_drain_on_a_lost_connection_is_a_connection_error() -> None:
    protocol = BaseProtocol(asyncio.get_running_loop())
    protocol.connection_made(Recorder())
    protocol.pause_writing()
    protocol.connection_lost(None)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(drain(protocol), 1)
