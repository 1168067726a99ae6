"""A unix-socket proxy in front of the test Engine whose daemon a test can make die and come back:
everything that talks to the proxy (the gateway, compose) sees the Engine vanish at once, as when
dockerd is killed, while the real daemon and its containers stay for the cleanup."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path


class KillableEngine:
    """Listens on ``path`` and forwards every connection to the Engine at ``upstream`` (a unix
    socket path). ``kill()`` closes every connection and removes the socket, so new ones are
    refused; ``revive()`` listens again."""

    def __init__(self, upstream: str, path: Path) -> None:
        self._upstream = upstream
        self.path = path
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    async def __aenter__(self) -> KillableEngine:
        await self.revive()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    async def revive(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def kill(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Closing both ends of every link ends its copies, as a dead daemon's sockets would.
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._links, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_unix_connection(self._upstream)
            self._writers.add(upstream_w)
            await asyncio.gather(_copy(client_r, upstream_w), _copy(upstream_r, client_w))
        except OSError:
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
                    self._writers.discard(writer)
            self._links.discard(task)


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(65536):
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof():
        dst.write_eof()
