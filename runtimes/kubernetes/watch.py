"""Pod changes as runtime events, from a list and then a watch per namespace scope.

A watch that goes silent or breaks is reported to the readiness probe (``trouble``) until it is
open again, so a gateway deaf to pod changes does not claim to be healthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from .. import kubeobjects as ko
from ..base import RuntimeEvent
from ..errors import OperationFailed, RuntimeFailure, Unavailable
from .client import ApiSession, Gone
from .paths import ManagedNamespaces, pod_path
from .queries import controller_name, replicaset_owners

log = logging.getLogger(__name__)


class PodWatches:
    """The pod watches of one runtime, and what is wrong with those not open right now."""

    def __init__(
        self, session: ApiSession, namespaces: ManagedNamespaces, *, runtime: str, watch_timeout: float
    ) -> None:
        self._session = session
        self._namespaces = namespaces
        self._runtime = runtime
        # A watch silent this long is dead. The apiserver is asked to end each watch a quarter
        # earlier, so a healthy one is always renewed before the deadline, bookmarks or not.
        self._watch_timeout = watch_timeout
        self._watch_seconds = max(1, int(watch_timeout * 3 / 4))
        # aiohttp's sock_read is the deadline: it measures the peer's silence, headers included.
        self._watch_read_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(watch_timeout, 5), sock_read=watch_timeout
        )
        # Watches (by path) that went silent or broke and are not open again yet.
        self.trouble: dict[str, str] = {}

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Pod changes from a watch per namespace scope (one for the whole cluster by default).

        Each (re)list first reports every pod as it is, so nothing that changed while the watch
        was down goes unseen; 410 Gone lists again.
        """
        scopes = self._namespaces.scopes(None)
        if len(scopes) == 1:
            async for event in self._scope_events(scopes[0]):
                yield event
            return
        queue: asyncio.Queue[RuntimeEvent | BaseException] = asyncio.Queue(maxsize=1024)

        async def pump(scope: str) -> None:
            try:
                async for event in self._scope_events(scope):
                    await queue.put(event)
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(s), name=f"kube-watch-{s}") for s in scopes]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _scope_events(self, scope: str) -> AsyncIterator[RuntimeEvent]:
        path = pod_path(scope) if scope else "/api/v1/pods"
        known: set[tuple[str, str]] = set()
        while True:
            listing = await self._session.json("GET", path)
            version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
            owners = replicaset_owners(listing.get("items") or [])
            current: set[tuple[str, str]] = set()
            for pod in listing.get("items") or ():
                event = self._pod_event("sync", pod, owners)
                current.add((event.namespace, event.container_id))
                yield event
            for namespace, pod_name in known - current:
                yield self._deleted(pod_name, namespace, {})
            known = current
            try:
                async for kind, pod in self._watch(path, version):
                    meta = pod.get("metadata") or {}
                    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                    if kind == "DELETED":
                        known.discard(key)
                        yield self._deleted(key[1], key[0], meta.get("labels") or {})
                        continue
                    known.add(key)
                    yield self._pod_event(kind.lower(), pod, replicaset_owners([pod]))
            except Gone:
                log.info("pod watch expired (410 Gone); listing again")

    async def _watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events from ``version`` on, renewed from the last one seen until 410 or an error.

        The apiserver ends each watch after ``timeoutSeconds``, shorter than the silence deadline:
        a stream silent past the deadline is dead (a proxy that holds the connection but forwards
        nothing), so it is closed and opened again from the last version seen. Until a watch is
        open again, the readiness probe reports it.
        """
        while True:
            try:
                response = await self._session.open(
                    "GET",
                    path,
                    query={
                        "watch": "1",
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": self._watch_seconds,
                    },
                    timeout=self._watch_read_timeout,
                )
            except Gone:
                raise
            except RuntimeFailure as exc:
                self.trouble[path] = (
                    f"The pod watch cannot be opened ({exc.detail})"
                    if exc.detail
                    else "The pod watch cannot be opened"
                )
                raise
            self.trouble.pop(path, None)
            ended = False
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = str(event.get("type", ""))
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise Gone(str(obj.get("message", "")))
                        raise OperationFailed(f"watch error: {obj.get('message', '')}")
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if kind != "BOOKMARK":
                        yield kind, obj
                ended = True  # the apiserver ended the watch after timeoutSeconds
            except aiohttp.ServerTimeoutError:
                log.warning("pod watch %s silent for %g s; opening it again", path, self._watch_timeout)
                self.trouble[path] = (
                    f"The pod watch was silent for {self._watch_timeout:g} s and is being reopened"
                )
            except (aiohttp.ClientError, OSError) as exc:
                self.trouble[path] = "The pod watch broke off and is being reopened"
                raise Unavailable(f"the pod watch broke off: {exc!r}") from exc
            finally:
                # A stream that ended cleanly leaves a reusable connection; any other is closed.
                if ended:
                    response.release()
                else:
                    response.close()

    def _pod_event(
        self, action: str, pod: Mapping[str, Any], owners: Mapping[tuple[str, str], str]
    ) -> RuntimeEvent:
        summary = ko.pod_summary(pod, controller_name(pod, owners))
        return RuntimeEvent(
            container_id=summary.id,
            name=summary.name,
            action=action,
            state=summary.state,
            labels=summary.labels,
            runtime=self._runtime,
            namespace=summary.namespace,
            timestamp=int(time.time()),
            health=summary.health,
            time_nano=time.time_ns(),
            annotations=summary.annotations,
        )

    def _deleted(self, name: str, namespace: str, labels: Mapping[str, str]) -> RuntimeEvent:
        return RuntimeEvent(
            container_id=name,
            name=name,
            action="deleted",
            state=None,
            labels=labels,
            runtime=self._runtime,
            namespace=namespace,
            timestamp=int(time.time()),
        )
