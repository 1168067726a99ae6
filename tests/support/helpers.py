"""The gateway's helper processes (a log search's), as a test sees them among its children."""

from __future__ import annotations

import asyncio
import itertools

import psutil


def search_helpers() -> list[psutil.Process]:
    """The log search helpers running now."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "nekzus.logsearch_process" in " ".join(child.cmdline())
    ]


async def until_search_helpers(running: bool, seconds: float = 30) -> None:
    """Until a log search helper runs (or none does). A process's start or end is no event a test
    can await, so they are looked for every 10 ms."""
    async with asyncio.timeout(seconds):
        for _ in itertools.count():
            if bool(search_helpers()) is running:
                return
            await asyncio.sleep(0.01)
