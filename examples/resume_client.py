"""A reference client of the nekzus event stream that survives reconnects without losing an event.

It keeps the ``epoch`` and ``seq`` of the last event it handled. On every (re)connect it resumes
from there: the gateway replays what was missed, in order and once, then says ``resumed`` and goes
live; or, when the gateway restarted (another ``epoch``) or the client was away longer than the
gateway keeps events, it answers ``resync`` with a snapshot of the containers and the running
operations, which replaces the client's view, then carries on from the snapshot's ``seq``.

    python examples/resume_client.py http://gateway:8080 --token "$NEKZUS_TOKEN"

Only aiohttp is needed. A real app would also persist ``epoch``/``seq`` (and its container view)
across its own restarts; this one keeps them in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from typing import Any

import aiohttp


class EventStream:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.url = base_url.rstrip("/") + "/api/v1/ws"
        self.token = token
        self.epoch: str | None = None
        self.seq = 0
        self.containers: dict[str, dict[str, Any]] = {}  # the app's view, by container id
        # Between a resume message and the gateway's "resuming", live events may arrive that the
        # replay then sends again in their place: they are skipped.
        self.resuming = False

    async def run(self) -> None:
        """Connect, resume, handle events; on any disconnect wait a little and do it again."""
        delay = 1.0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._connection(session)
                    delay = 1.0
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    print(f"disconnected: {exc!r}")
                # Back off with jitter, so a thousand phones do not all come back at once.
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 30.0)

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with session.ws_connect(self.url, headers=headers, heartbeat=30) as ws:
            # Subscribe first, so that the replay is filtered like the live stream.
            await ws.send_json({"type": "subscribe", "data": {"types": ["container.*", "health_change"]}})
            self.resuming = True
            if self.epoch is None:
                # First start: nothing to resume; resuming from another epoch asks for a snapshot.
                await ws.send_json({"type": "resume", "data": {"epoch": "none", "seq": 0}})
            else:
                await ws.send_json({"type": "resume", "data": {"epoch": self.epoch, "seq": self.seq}})
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                message = json.loads(msg.data)
                self.handle(message["type"], message["data"])

    def handle(self, message_type: str, data: dict[str, Any]) -> None:
        if message_type == "resync":
            self.containers = {c["id"]: c for c in data["containers"]}
            pending = [op["operationId"] for op in data["operations"]]
            print(f"resync: {len(self.containers)} containers, operations still running: {pending}")
            self.epoch, self.seq = data["epoch"], data["seq"]
        elif message_type == "resuming":
            self.resuming = False
        elif message_type == "resumed":
            print(f"resumed at seq {data['seq']} ({data['replayed']} events replayed)")
            self.epoch, self.seq = data["epoch"], data["seq"]
        elif "seq" in data and "epoch" in data:
            if self.resuming:
                return
            self.apply(message_type, data)
            # After handling: a crash in between replays this event rather than skipping it.
            self.epoch, self.seq = data["epoch"], data["seq"]
        elif message_type == "error":
            print(f"error: {data['error']}: {data['message']}")

    def apply(self, message_type: str, data: dict[str, Any]) -> None:
        if message_type == "container.state":
            if data["state"] == "removed":
                self.containers.pop(data["containerId"], None)
            else:
                self.containers.setdefault(data["containerId"], {"id": data["containerId"]})["state"] = data[
                    "state"
                ]
        print(f"#{data['seq']} {message_type} {data.get('containerId', data.get('appId', ''))}")


def main() -> None:
    parser = argparse.ArgumentParser(description="follow a nekzus gateway's events across reconnects")
    parser.add_argument("url", help="the gateway, e.g. http://192.168.1.10:8080")
    parser.add_argument("--token", help="a JWT with read:containers (LAN clients need none)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(EventStream(args.url, args.token).run())


if __name__ == "__main__":
    main()
