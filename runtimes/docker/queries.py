"""The container list and inspect: each Engine document read into the contract's rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..base import ContainerRef, ContainerRow, ContainerSummary, PortMapping
from ..errors import NotFound
from ..redact import mask_env_list
from .paths import container_path, short_id
from .session import EngineSession
from .states import DockerRow, Lifetime, map_state, parse_timestamp

_INSPECT_CONCURRENCY = 8  # inspects at once while a state model (re)learns its containers


def _ports_from_list(ports: list[dict[str, Any]] | None) -> tuple[PortMapping, ...]:
    return tuple(
        PortMapping(
            ip=p.get("IP", ""),
            private_port=int(p.get("PrivatePort", 0)),
            public_port=int(p["PublicPort"]) if p.get("PublicPort") else None,
            type=p.get("Type", "tcp"),
        )
        for p in ports or ()
    )


def _ports_from_inspect(ports: Mapping[str, Any] | None) -> tuple[PortMapping, ...]:
    result = []
    for key, bindings in (ports or {}).items():
        private, _, proto = key.partition("/")
        if not bindings:
            result.append(PortMapping("", int(private), None, proto or "tcp"))
            continue
        for binding in bindings:
            public = binding.get("HostPort")
            result.append(
                PortMapping(
                    binding.get("HostIp", ""),
                    int(private),
                    int(public) if public else None,
                    proto or "tcp",
                )
            )
    return tuple(result)


def _health_from_status(status: str) -> str | None:
    """The healthcheck verdict in a list row's status: "Up 2 hours (healthy)"."""
    for verdict, marker in (
        ("healthy", "(healthy)"),
        ("unhealthy", "(unhealthy)"),
        ("starting", "(health: starting)"),
    ):
        if status.endswith(marker):
            return verdict
    return None


def _summary_from_list(row: Mapping[str, Any], runtime: str) -> ContainerSummary:
    names = row.get("Names") or [""]
    return ContainerSummary(
        id=short_id(row["Id"]),
        full_id=row["Id"],
        name=names[0].lstrip("/"),
        image=row.get("Image", ""),
        state=map_state(row.get("State", "")),
        status=row.get("Status", ""),
        created=int(row.get("Created", 0)),
        ports=_ports_from_list(row.get("Ports")),
        labels=row.get("Labels") or {},
        runtime=runtime,
        health=_health_from_status(row.get("Status", "")),
    )


class Queries:
    """What the Engine says of its containers: the list, the state model's rows, one inspect."""

    def __init__(self, session: EngineSession, runtime: str) -> None:
        self._session = session
        self._runtime = runtime

    async def list_containers(self) -> list[ContainerSummary]:
        rows = await self._session.json("containers/json", params={"all": "1"})
        return [_summary_from_list(row, self._runtime) for row in rows]

    async def rows(
        self, ids: Sequence[str] | None = None, *, known: Mapping[str, ContainerRow] | None = None
    ) -> list[ContainerRow]:
        """List rows with the lifetimes their status lines are rendered from: every container, or
        those ``ids`` name (ids or their prefixes).

        A lifetime comes from an inspect. On a full listing, a container whose ``known`` row still
        renders the very status line the Engine shows keeps its lifetime instead: a periodic
        resync of a quiet daemon is one list call.
        """
        if ids is None:
            listed = await self._list_raw({"all": "1"})
            now = time.time()
            lifetimes: dict[str, Lifetime] = {}
            for row in listed:
                old = (known or {}).get(short_id(row["Id"]))
                if (
                    isinstance(old, DockerRow)
                    and old.lifetime.status == row.get("State")
                    and old.lifetime.status_line(now) == row.get("Status")
                ):
                    lifetimes[row["Id"]] = old.lifetime
            missing = [row["Id"] for row in listed if row["Id"] not in lifetimes]
            lifetimes.update(await self._lifetimes(missing))
        else:
            # The row and the lifetimes at once: this is on the path of every state event.
            filters = json.dumps({"id": list(ids)})
            listing, inspected = await asyncio.gather(
                self._list_raw({"all": "1", "filters": filters}),
                self._lifetimes(ids),
                return_exceptions=True,
            )
            # Raised once both calls have ended, so neither outlives this call.
            if isinstance(listing, BaseException):
                raise listing
            if isinstance(inspected, BaseException):
                raise inspected
            listed, fresh = listing, inspected
            lifetimes = {
                row["Id"]: lt for row in listed for i, lt in fresh.items() if row["Id"].startswith(i)
            }
        result: list[ContainerRow] = []
        for row in listed:
            lifetime = lifetimes.get(row["Id"])
            if lifetime is None:
                continue  # removed between the list and its inspect
            summary = _summary_from_list(row, self._runtime)
            result.append(
                DockerRow(
                    replace(summary, state=map_state(lifetime.status), health=lifetime.health), lifetime
                )
            )
        return result

    async def _list_raw(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._session.json("containers/json", params=params)
        return rows

    async def _lifetimes(self, ids: Sequence[str]) -> dict[str, Lifetime]:
        """Each container's lifetime by the id asked with; one that is gone is left out."""
        limit = asyncio.Semaphore(_INSPECT_CONCURRENCY)

        async def one(cid: str) -> Lifetime | None:
            async with limit:
                try:
                    doc = await self.inspect_raw(ContainerRef(cid))
                except NotFound:
                    return None
            return Lifetime.from_state(doc.get("State") or {})

        found = await asyncio.gather(*(one(cid) for cid in ids))
        return {cid: lt for cid, lt in zip(ids, found, strict=True) if lt is not None}

    async def inspect_raw(self, ref: ContainerRef) -> dict[str, Any]:
        """The container's inspect document as the Engine wrote it, secrets and all."""
        doc: dict[str, Any] = await self._session.json(container_path(ref.id, "json"))
        return doc

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        doc = await self.inspect_raw(ref)
        config = doc.get("Config") or {}
        state = doc.get("State") or {}
        lifetime = Lifetime.from_state(state)
        return ContainerSummary(
            id=short_id(doc["Id"]),
            full_id=doc["Id"],
            name=str(doc.get("Name", "")).lstrip("/"),
            image=config.get("Image", ""),
            state=map_state(state.get("Status", "")),
            status=lifetime.status_line(time.time()),
            created=parse_timestamp(doc.get("Created", "")),
            ports=_ports_from_inspect((doc.get("NetworkSettings") or {}).get("Ports")),
            labels=config.get("Labels") or {},
            runtime=self._runtime,
            health=lifetime.health,
        )

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        doc = await self.inspect_raw(ref)
        config = doc.get("Config")
        if isinstance(config, dict) and config.get("Env"):
            config["Env"] = mask_env_list(config["Env"])
        return doc
