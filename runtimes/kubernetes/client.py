"""The session with one kube-apiserver: every call goes through :class:`ApiSession`.

kubernetes_asyncio provides the configuration (kubeconfig, contexts, in-cluster service account,
token refresh) and the authenticated HTTP calls; responses are read as plain JSON. Every apiserver
error is translated into :mod:`runtimes.errors` here, and the calls that may be made again are
retried here, so the other modules of the backend deal only in runtime errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from .. import kubeobjects as ko
from ..errors import Conflict, Forbidden, NotFound, OperationFailed, RuntimeFailure, Unavailable

log = logging.getLogger(__name__)

ConfigurationSource = k8s.Configuration | Callable[[], Awaitable[k8s.Configuration]]

_T = TypeVar("_T")


class Gone(RuntimeFailure):
    """A watch's resourceVersion is too old (410): list again and watch from there."""


class Overloaded(OperationFailed):
    """The apiserver is overloaded (429) or failed inside (5xx): the same call may work soon."""


class OutOfTime(OperationFailed):
    """Time ran out while the apiserver kept failing: whether the last call took effect is unknown."""


def kubeconfig_loader(
    kubeconfig: Path | None, context: str | None, *, in_cluster: bool
) -> Callable[[], Awaitable[k8s.Configuration]]:
    """Reads the client configuration when first needed, so the gateway starts without it."""

    async def load() -> k8s.Configuration:
        configuration = k8s.Configuration()
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                path = kubeconfig or Path(
                    os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config"
                )
                await k8s_config.load_kube_config(
                    config_file=str(path), context=context or None, client_configuration=configuration
                )
        except (k8s_config.ConfigException, OSError, ValueError) as exc:
            raise Unavailable(f"cannot load the Kubernetes client configuration: {exc}") from exc
        return configuration

    return load


class ApiSession:
    """The authenticated client of one apiserver, created on first use, and the outage gate.

    ``ready_timeout`` bounds how long a call that fails in a way that passes is made again.
    """

    def __init__(
        self, configuration: ConfigurationSource, *, request_timeout: float, ready_timeout: float
    ) -> None:
        self._source = configuration
        self.ready_timeout = ready_timeout
        self._request_timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=min(request_timeout, 5)
        )
        self._api: k8s.ApiClient | None = None
        self._api_lock = asyncio.Lock()
        # Set while the last readiness probe failed (its client-facing sentence): calls answer
        # Unavailable at once instead of each waiting out its timeout, until a probe succeeds.
        self.outage: str | None = None

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _client(self) -> k8s.ApiClient:
        if self._api is None:
            async with self._api_lock:
                if self._api is None:
                    source = self._source
                    configuration = source if isinstance(source, k8s.Configuration) else await source()
                    self._api = k8s.ApiClient(configuration)
        return self._api

    async def open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
        gated: bool = True,
        checked: bool = True,
    ) -> aiohttp.ClientResponse:
        """The apiserver's response to one call; an error status is raised as a runtime error
        (unless ``checked`` is false). ``timeout`` defaults to the configured request timeout.

        While the last readiness probe failed, a ``gated`` call answers Unavailable at once.
        """
        if gated and self.outage is not None:
            raise Unavailable(f"not calling {method} {path}: {self.outage}", detail=self.outage)
        timeout = timeout or self._request_timeout
        api = await self._client()
        try:
            response: aiohttp.ClientResponse = await api.call_api(
                path,
                method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Content-Type": content_type, "Accept": "application/json, */*"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except TimeoutError as exc:
            # aiohttp closes a connection whose request failed: it never goes back to the pool.
            seconds = timeout.total or timeout.sock_read or timeout.sock_connect
            detail = f"The Kubernetes API did not answer within {seconds:g} s"
            raise Unavailable(f"{detail} ({method} {path})", detail=detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(
                f"the Kubernetes API did not answer {method} {path}: {exc!r}",
                detail="The Kubernetes API cannot be reached",
            ) from exc
        if checked and response.status >= 400:
            try:
                text = await response.text()
            except (TimeoutError, aiohttp.ClientError):
                response.close()
                text = ""
            finally:
                response.release()
            raise_status(response.status, text, f"{method} {path}")
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.open(method, path, **kwargs)
        try:
            data: dict[str, Any] = await response.json(content_type=None)
        except TimeoutError as exc:
            response.close()  # part of the body is still on its way: the connection is not reusable
            detail = "The Kubernetes API did not answer in time"
            raise Unavailable(f"{detail} ({method} {path})", detail=detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            response.close()
            raise Unavailable(f"the Kubernetes API broke off {method} {path}: {exc!r}") from exc
        except ValueError as exc:
            raise OperationFailed(f"{method} {path} answered no JSON") from exc
        finally:
            response.release()
        return data

    async def retry(self, call: Callable[[], Awaitable[_T]], what: str) -> _T:
        """``call``'s answer, asking again while the apiserver fails in a way that passes (see
        :func:`until`) for up to ``ready_timeout``; a refusal is raised at once."""
        answers: list[_T] = []

        async def answered() -> bool:
            answers.append(await call())
            return True

        await until(answered, what, self.ready_timeout)
        return answers[0]

    async def wait(
        self, path: str, done: Callable[[dict[str, Any]], bool], what: str, timeout: float | None = None
    ) -> None:
        """Until the object at ``path`` satisfies ``done`` (see :func:`until`)."""

        async def check() -> bool:
            return done(await self.json("GET", path))

        await until(check, what, self.ready_timeout if timeout is None else timeout)


def raise_status(status: int, text: str, what: str) -> NoReturn:
    """The runtime error for an apiserver's error status and body (its message, never the body)."""
    try:
        message = str(json.loads(text).get("message", ""))
    except (ValueError, AttributeError):
        message = text[:200]
    if status == 403:
        raise Forbidden(f"{what}: {message}", detail=ko.forbidden_reason(message))
    if status == 404:
        raise NotFound(f"{what}: {message}")
    if status == 409:
        raise Conflict(f"{what}: {message}")
    if status == 410:
        raise Gone(f"{what}: {message}")
    if status in (401, 502, 503, 504):
        raise Unavailable(f"{what}: [{status}] {message}")
    if status == 429 or status >= 500:
        raise Overloaded(f"{what}: [{status}] {message}")
    raise OperationFailed(f"{what}: [{status}] {message}")


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    """Poll ``check`` (quickly at first, then every half second) until it holds or time is up.

    An apiserver that is down, overloaded (429) or failing inside (5xx) is asked again: that
    passes (a restart, an etcd election) and the goal may be reached meanwhile. Refusals
    (403, 404, 409, a bad request) are raised at once. Out of time while the apiserver still
    fails, the error is :class:`OutOfTime`: whether the last call took effect is unknown.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        failure: RuntimeFailure | None = None
        try:
            if await check():
                return
        except (Unavailable, Overloaded) as exc:
            failure = exc
            log.info("the Kubernetes API failed while waiting for %s, asking again: %s", what, exc)
        if time.monotonic() >= deadline:
            if failure is not None:
                raise OutOfTime(
                    f"gave up after {timeout:g} s waiting for {what}: {failure}",
                    detail=f"The Kubernetes API did not answer within {timeout:g} s waiting for {what}",
                ) from failure
            raise OperationFailed(
                f"timed out after {timeout:g} s waiting for {what}",
                detail=f"Timed out after {timeout:g} s waiting for {what}",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
