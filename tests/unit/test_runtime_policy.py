"""What a runtime decides for itself: which actions it refuses and with which error, the id syntax it
accepts, and whether a namespace means it; and how the one error map renders each refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from nekzus.errors import from_runtime
from runtimes import (
    ACTIONS,
    Action,
    AlreadyPaused,
    AlreadyRunning,
    AlreadyStopped,
    Conflict,
    ContainerRef,
    ContainerState,
    ContainerSummary,
    Forbidden,
    NoRuntime,
    NotFound,
    NotNamespaced,
    NotPaused,
    NotRunning,
    OperationFailed,
    RuntimeRegistry,
    Unavailable,
    UnknownRuntime,
    Unsupported,
    state_refusal,
)
from runtimes.docker import DockerRuntime
from runtimes.kubernetes import KubernetesRuntime
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config

STARTED = {ContainerState.RUNNING, ContainerState.RESTARTING}
LIVE = {ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING}


def _kube_runtime() -> KubernetesRuntime:
    async def no_configuration() -> object:
        raise AssertionError("the policy needs no apiserver")

    return KubernetesRuntime(no_configuration)  # type: ignore[arg-type]


@pytest.fixture
async def docker() -> AsyncIterator[DockerRuntime]:
    runtime = DockerRuntime("unix:///nonexistent/docker.sock")
    yield runtime
    await runtime.close()


def _pod(state: ContainerState, controller: str | None) -> ContainerSummary:
    return replace(summary(1, state=state), runtime="kubernetes", namespace="shop", controller=controller)


@pytest.mark.parametrize("state", list(ContainerState))
@pytest.mark.parametrize("action", ACTIONS)
def test_the_shared_state_rule(state: ContainerState, action: Action) -> None:
    refused = state_refusal(summary(1, state=state), action)
    if action == "start" and state in STARTED:
        assert isinstance(refused, AlreadyRunning)
    elif action == "stop" and state not in LIVE:
        assert isinstance(refused, AlreadyStopped)
    elif action == "pause" and state is not ContainerState.RUNNING:
        # Only a running container pauses: a restarting one is between two runs.
        expected = AlreadyPaused if state is ContainerState.PAUSED else NotRunning
        assert type(refused) is expected
    elif action == "unpause" and state is not ContainerState.PAUSED:
        assert isinstance(refused, NotPaused)
    else:
        # A paused container is started by resuming it, and stopped like a running one.
        assert refused is None


@pytest.mark.parametrize("state", list(ContainerState))
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("force", [False, True])
async def test_docker_refuses_by_state_alone(
    docker: DockerRuntime, state: ContainerState, action: Action, force: bool
) -> None:
    container = summary(1, state=state)
    refused = docker.refusal(container, action, force=force)
    expected = state_refusal(container, action)
    assert type(refused) is type(expected)


def test_kubernetes_refusals_by_workload() -> None:
    kube = _kube_runtime()
    running, stopped = ContainerState.RUNNING, ContainerState.STOPPED
    # The state rule comes first, whatever the workload.
    assert isinstance(kube.refusal(_pod(running, ""), "start", force=False), AlreadyRunning)
    assert isinstance(kube.refusal(_pod(stopped, ""), "stop", force=False), AlreadyStopped)
    # A standalone pod: a stop or restart cannot be undone, so only with force.
    for action in ("stop", "restart"):
        refused = kube.refusal(_pod(running, ""), action, force=False)
        assert isinstance(refused, Unsupported) and "force=true" in refused.detail
        assert kube.refusal(_pod(running, ""), action, force=True) is None
    assert kube.refusal(_pod(stopped, ""), "start", force=False) is None
    # Only scalable workloads stop; the others restart by replacing their pod.
    refused = kube.refusal(_pod(running, "daemonset/agent"), "stop", force=True)
    assert isinstance(refused, Unsupported) and "daemonset" in refused.detail
    assert kube.refusal(_pod(running, "daemonset/agent"), "restart", force=False) is None
    for workload in ("deployment/web", "statefulset/db", "replicaset/web-1"):
        assert kube.refusal(_pod(running, workload), "stop", force=False) is None
    # An entry without controllers (not a pod) has the state rule only.
    assert kube.refusal(_pod(running, None), "stop", force=False) is None


async def test_kubernetes_stop_refuses_what_its_refusal_refuses() -> None:
    kube = _kube_runtime()
    daemon = _pod(ContainerState.RUNNING, "daemonset/agent")

    async def get(ref: ContainerRef) -> ContainerSummary:
        return daemon

    kube._queries.get = get  # type: ignore[method-assign]
    with pytest.raises(Unsupported) as refused:
        await kube.stop(ContainerRef("agent-x1", "shop"), timeout=1)
    expected = kube.refusal(daemon, "stop", force=True)
    assert expected is not None and refused.value.detail == expected.detail


@pytest.mark.parametrize(
    ("value", "docker_ok", "kube_ok"),
    [
        ("web", True, True),
        ("0123456789ab", True, True),
        ("web-0.shop", True, True),
        ("Web_1", True, False),
        ("deployment/web", False, True),
        ("statefulset/db", False, True),
        ("daemonset/agent", False, False),
        ("a" * 253, True, True),
        ("a" * 254, False, False),
        ("-web", False, False),
        ("../x", False, False),
        ("a/b", False, False),
        ("web\n", False, False),
        ("", False, False),
        (5, False, False),
    ],
)
async def test_each_runtime_accepts_its_own_ids(
    docker: DockerRuntime, value: object, docker_ok: bool, kube_ok: bool
) -> None:
    assert (docker.accepts_id(value), _kube_runtime().accepts_id(value)) == (docker_ok, kube_ok)


async def test_only_kubernetes_is_namespaced(docker: DockerRuntime) -> None:
    assert (docker.namespaced, _kube_runtime().namespaced) == (False, True)


class _NamespacedFake(FakeRuntime):
    namespaced = True


def test_the_registry_answers_which_runtime_a_namespace_means() -> None:
    docker, kube = FakeRuntime([]), _NamespacedFake([], name="kubernetes")
    registry = RuntimeRegistry("docker")
    registry.add(docker)
    with pytest.raises(NotNamespaced):
        registry.addressed(None, "shop")  # no runtime has namespaces
    registry.add(kube)
    assert registry.namespaced() is kube
    assert registry.addressed(None) is docker
    assert registry.addressed(None, "shop") is kube
    assert registry.addressed("kubernetes", "shop") is kube
    assert registry.addressed("docker") is docker
    with pytest.raises(NotNamespaced, match="'docker' has none"):
        registry.addressed("docker", "shop")
    with pytest.raises(UnknownRuntime):
        registry.addressed("podman", "shop")
    assert registry.select(None) == [docker, kube]
    assert registry.select(None, "shop") == [kube]
    with pytest.raises(NotNamespaced):
        registry.select("docker", "shop")
    assert RuntimeRegistry("docker").namespaced() is None
    with pytest.raises(NoRuntime):
        RuntimeRegistry("docker").addressed(None, "shop")


def test_the_error_map_names_each_refusal_for_a_response_and_for_a_bulk_result() -> None:
    started = from_runtime(AlreadyRunning("x"))
    assert (started.status, started.code, started.message, started.phrase) == (
        409,
        "CONTAINER_ALREADY_STARTED",
        "Container is already running",
        "container already running",
    )
    stopped = from_runtime(AlreadyStopped("x"))
    assert (stopped.status, stopped.code, stopped.message, stopped.phrase) == (
        409,
        "CONTAINER_ALREADY_STOPPED",
        "Container is already stopped",
        "container already stopped",
    )
    unsupported = from_runtime(Unsupported("x", detail="Pods of a job cannot be stopped"))
    assert (unsupported.status, unsupported.code) == (409, "OPERATION_NOT_SUPPORTED")
    assert unsupported.message == unsupported.phrase == "Pods of a job cannot be stopped"
    assert from_runtime(NotFound("x"), container_id="web").phrase == "container not found"
    assert from_runtime(Unavailable("x", detail="gone")).phrase == "container runtime not available"
    inspect = from_runtime(
        OperationFailed("x"),
        fallback="CONTAINER_INSPECT_FAILED",
        fallback_message="Failed to inspect container",
    )
    assert (inspect.status, inspect.phrase) == (500, "failed to inspect container")


def test_the_error_map_for_readings_and_broken_streams() -> None:
    # A reading finds nothing running: the runtime's sentence says why.
    idle = from_runtime(Conflict("x", detail="deployment/web is scaled to 0"), reading=True)
    assert (idle.status, idle.code, idle.message) == (
        409,
        "CONTAINER_NOT_RUNNING",
        "deployment/web is scaled to 0",
    )
    assert from_runtime(Conflict("x")).code == "INTERNAL_ERROR"
    # Before a stream starts, a refusal is the client's own; once it runs, the stream failed.
    forbidden = Forbidden("x", detail="cannot get pods/log")
    assert from_runtime(forbidden, fallback="LOG_STREAM_FAILED").code == "FORBIDDEN"
    broken = from_runtime(forbidden, fallback="LOG_STREAM_FAILED", fallback_message="failed", broken=True)
    assert (broken.code, broken.message) == ("LOG_STREAM_FAILED", "cannot get pods/log")
    gone = from_runtime(NotFound("x"), fallback="LOG_STREAM_FAILED", fallback_message="failed", broken=True)
    assert (gone.code, gone.message) == ("LOG_STREAM_FAILED", "failed")
    away = from_runtime(Unavailable("x"), fallback="LOG_STREAM_FAILED", broken=True, reading=True)
    assert away.code == "RUNTIME_UNAVAILABLE"


async def test_a_start_resumes_a_paused_container_on_every_path(gateway: ClientFactory) -> None:
    # Distinct short ids: the first twelve hex digits of the full ones.
    paused, running = summary(1 << 208, state=ContainerState.PAUSED), summary(2 << 208)
    config = make_config("unix:///nonexistent/docker.sock")

    async def client_of() -> tuple[FakeRuntime, Any]:
        fake = FakeRuntime([paused, running])
        return fake, await gateway(config, runtimes=registry_of(fake))

    fake, client = await client_of()
    assert (await client.post(f"/api/v1/containers/{paused.id}/start")).status == 202
    started = await client.post(f"/api/v1/containers/{running.id}/start")
    assert (await started.json())["error"] == "CONTAINER_ALREADY_STARTED"

    fake, client = await client_of()
    body = {"action": "start", "containerIds": [paused.id, running.id]}
    results = (await (await client.post("/api/v1/containers/batch", json=body)).json())["results"]
    assert results == [
        {"id": paused.id, "name": paused.name, "success": True},
        {"id": running.id, "name": running.name, "success": False, "error": "container already running"},
    ]
    assert fake.containers[paused.full_id].state is ContainerState.RUNNING

    fake, client = await client_of()
    results = (await (await client.post("/api/v1/containers/start-all")).json())["results"]
    assert results == [{"id": paused.id, "name": paused.name, "success": True}]
    assert fake.containers[paused.full_id].state is ContainerState.RUNNING
