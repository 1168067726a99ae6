"""A loopback TCP proxy in front of the test control plane's apiserver that a test can freeze."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import yaml


class _Link:
    """One client connection through the proxy; once frozen, it stays frozen."""

    def __init__(self, frozen: bool) -> None:
        self.frozen = frozen


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 in front of ``port``.

    ``freeze()``: every connection, open or new, stays open but forwards nothing either way (an
    end of either side is not passed on either). ``thaw()``: new connections go through again; the
    frozen ones stay silent until their client hangs up, as behind a proxy that lost them.
    """

    def __init__(self, port: int) -> None:
        self._target = port
        self._frozen = False
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._links: set[_Link] = set()
        self.port = 0

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def freeze(self) -> None:
        self._frozen = True
        for link in self._links:
            link.frozen = True

    def thaw(self) -> None:
        self._frozen = False

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(self._frozen)
        self._links.add(link)
        upstream_w: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            """Forwards until ``src`` ends, then passes its end on; frozen, nothing at all."""
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if not link.frozen:
                        dst.write(data)
                        await dst.drain()
            if not link.frozen:
                dst.close()

        try:
            if link.frozen:
                while await client_r.read(65536):
                    pass
            else:
                upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._target)
                pump = asyncio.create_task(copy(upstream_r, client_w), name="proxy-upstream")
                await copy(client_r, upstream_w)
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
            self._links.discard(link)
            self._handlers.discard(task)


def proxied_kubeconfig(kubeconfig: Path, port: int, path: Path) -> Path:
    """``kubeconfig`` with its server moved to ``port`` (the certificate names 127.0.0.1)."""
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path
