"""Volumes and networks without a daemon: what the routes accept, how the Docker backend reads the
Engine's documents, and volume prune on Engines before and after API 1.42 (a fake Engine on a unix
socket; the test Engine speaks only one of those versions)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nekzus.errors import ApiError
from nekzus.http.routes.networks import subnets_field
from nekzus.http.routes.volumes import driver_name, engine_name, string_map
from runtimes import ContainerState
from runtimes.docker.networks import endpoints_by_network
from runtimes.docker.session import EngineSession
from runtimes.docker.volumes import Volumes, names_by_mount
from runtimes.engine.networks import Endpoint, NetworkStore, Subnet
from runtimes.engine.volumes import VolumeSpec, VolumeStore, is_engine_name
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_errors import expect

ANONYMOUS = "a" * 64
LABELLED = "b" * 12  # Engine 23 and later label their anonymous volumes
NAMED = "pgdata"


def field_of(parse: Callable[[Any], object], value: Any) -> str:
    """The field the VALIDATION_ERROR of ``parse(value)`` names."""
    with pytest.raises(ApiError) as raised:
        parse(value)
    assert raised.value.status == 400 and raised.value.code == "VALIDATION_ERROR"
    field: str = raised.value.extra["field"]
    return field


def test_engine_names() -> None:
    for good in ("db", "my-vol_1.2", "A" * 255, "0" * 64):
        assert is_engine_name(good)
    for bad in ("", "a", "-a", ".a", "a/b", "..", "a b", "a%2Fb", "é1", "a" * 256, None, 12, ["ab"]):
        assert not is_engine_name(bad)
    assert engine_name("data", "name", "volume") == "data"
    assert field_of(lambda v: engine_name(v, "name", "volume"), "../x") == "name"


def test_drivers_and_string_maps() -> None:
    assert driver_name(None, "local") == "local"
    assert driver_name("vieux/sshfs:latest", "local") == "vieux/sshfs:latest"
    drivers: list[Any] = ["", " local", "a b", 3, True, "x" * 256]
    for driver in drivers:
        assert field_of(lambda v: driver_name(v, "local"), driver) == "driver"
    assert string_map(None, "labels") == {}
    assert string_map({"a": "", "b": "c"}, "labels") == {"a": "", "b": "c"}
    maps: list[Any] = [[], "a=b", {"a": 1}, {"a": None}, {"": "v"}, {f"k{i}": "" for i in range(101)}]
    for options in maps:
        assert field_of(lambda v: string_map(v, "driverOpts"), options) == "driverOpts"


def test_subnets() -> None:
    assert subnets_field(None) == ()
    assert subnets_field([{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}, {"subnet": "fd00:1::/64"}]) == (
        Subnet("10.1.0.0/16", "10.1.0.1"),
        Subnet("fd00:1::/64", None),
    )
    # Normalised: the Engine compares them as strings.
    assert subnets_field([{"subnet": "FD00:0:0:1:0::/64", "gateway": "FD00:0:0:1::1"}]) == (
        Subnet("fd00:0:0:1::/64", "fd00:0:0:1::1"),
    )
    refused: list[Any] = [
        {},
        "10.0.0.0/8",
        [None],
        [{"subnet": "10.0.0.1/8"}],
        [{"subnet": "10.0.0.0/33"}],
        [{"subnet": 10}],
        [{"subnet": float("nan")}],
        [{"subnet": "10.0.0.0/8", "gateway": "11.0.0.1"}],
        [{"subnet": "10.0.0.0/8", "gateway": 1}],
        [{"subnet": "10.0.0.0/8", "gw": "10.0.0.1"}],
        [{"subnet": "10.0.0.0/8"}, {"subnet": "10.2.0.0/16"}],
        [{"subnet": f"10.{i}.0.0/16"} for i in range(17)],
    ]
    for subnets in refused:
        assert field_of(subnets_field, subnets) == "subnets"


def test_who_uses_what() -> None:
    rows = [
        {
            "Id": "1" * 64,
            "Names": ["/web"],
            "Mounts": [{"Type": "volume", "Name": "data"}, {"Type": "bind", "Source": "/etc"}],
            "NetworkSettings": {"Networks": {"front": {"NetworkID": "n1", "IPAddress": "10.0.0.2"}}},
        },
        {
            "Id": "2" * 64,
            "Names": [],
            "Mounts": [{"Type": "volume", "Name": "data"}],
            # Never started: on its network by name only, without an address.
            "NetworkSettings": {"Networks": {"back": {"NetworkID": "", "IPAddress": ""}}},
        },
    ]
    assert names_by_mount(rows) == {"data": ["web", "2" * 12]}
    assert endpoints_by_network(rows) == {
        "n1": [Endpoint("1" * 12, "web", "10.0.0.2")],
        "back": [Endpoint("2" * 12, "2" * 12, None)],
    }


async def test_a_runtime_without_them_answers_409(gateway: ClientFactory, tmp_path: Path) -> None:
    runtime = FakeRuntime([summary(1, state=ContainerState.RUNNING)])
    assert not isinstance(runtime, VolumeStore) and not isinstance(runtime, NetworkStore)
    client = await gateway(make_config(f"unix://{tmp_path}/none.sock"), runtimes=registry_of(runtime))
    for method, path in (
        ("GET", "/api/v1/volumes"),
        ("POST", "/api/v1/volumes/prune"),
        ("GET", "/api/v1/networks"),
        ("POST", "/api/v1/networks/x1/connect"),
    ):
        await expect(await client.request(method, path), 409, "OPERATION_NOT_SUPPORTED")


class FakeEngine:
    """The volume endpoints of an Engine speaking ``api``, and every request it was sent."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.asked: list[str] = []
        self.bodies: list[Any] = []
        self.volumes = {
            ANONYMOUS: {"Name": ANONYMOUS, "Labels": None},
            LABELLED: {"Name": LABELLED, "Labels": {"com.docker.volume.anonymous": ""}},
            NAMED: {"Name": NAMED, "Labels": {}},
        }

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(f"{request.method} {request.path_qs}")
        path = request.path.removeprefix(f"/v{self.api}")
        if request.path == "/version":
            return web.json_response({"ApiVersion": self.api})
        if path == "/volumes" and request.method == "GET":
            return web.json_response({"Volumes": list(self.volumes.values())})
        if path == "/system/df":
            sizes = {ANONYMOUS: 100, LABELLED: 20, NAMED: 5}
            return web.json_response(
                {"Volumes": [{"Name": n, "UsageData": {"Size": size}} for n, size in sizes.items()]}
            )
        if path == "/volumes/prune":
            return web.json_response({"VolumesDeleted": [NAMED], "SpaceReclaimed": 5})
        if path == "/volumes/create":
            body = await request.json()
            self.bodies.append(body)
            return web.json_response({"Name": body.get("Name", "c" * 64), "Driver": "local"}, status=201)
        name = path.removeprefix("/volumes/")
        if request.method == "DELETE" and self.volumes.pop(name, None) is not None:
            return web.Response(status=204)
        body = json.dumps({"message": "no such volume"}).encode()
        return web.Response(body=body, status=404, headers={"Content-Type": "application/json"})


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    """Starts a fake Engine of a given API version; answers it and a session with it."""
    runners: list[web.AppRunner] = []
    sessions: list[EngineSession] = []

    async def start(api: str) -> tuple[FakeEngine, Volumes]:
        engine = FakeEngine(api)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", engine.answer)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        socket = tmp_path / f"engine-{len(runners)}.sock"
        await web.UnixSite(runner, str(socket)).start()
        sessions.append(EngineSession(f"unix://{socket}"))
        return engine, Volumes(sessions[-1])

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


async def test_prune_from_api_1_42_leaves_named_volumes_to_the_engine(serve: Callable[[str], Any]) -> None:
    engine, volumes = await serve("1.42")
    pruned = await volumes.prune(all=False)
    assert (pruned.deleted, pruned.space_reclaimed) == ((NAMED,), 5)
    assert engine.asked[-1] == "POST /v1.42/volumes/prune"
    await volumes.prune(all=True)
    assert engine.asked[-1] == "POST /v1.42/volumes/prune?filters=" + "%7B%22all%22:+%5B%22true%22%5D%7D"


async def test_prune_before_api_1_42_removes_only_anonymous_volumes(serve: Callable[[str], Any]) -> None:
    engine, volumes = await serve("1.41")
    pruned = await volumes.prune(all=False)
    assert (set(pruned.deleted), pruned.space_reclaimed) == ({ANONYMOUS, LABELLED}, 120)
    assert set(engine.volumes) == {NAMED}
    assert not any("prune" in asked for asked in engine.asked)
    # all: the old Engine's prune is already Docker's `volume prune -a`.
    await volumes.prune(all=True)
    assert engine.asked[-1] == "POST /v1.41/volumes/prune"


async def test_create_sends_the_spec_as_json(serve: Callable[[str], Any]) -> None:
    engine, volumes = await serve("1.41")
    spec = VolumeSpec(name="fresh", labels={"a": "b"}, driver_opts={"type": "tmpfs", "device": "tmpfs"})
    created = await volumes.create(spec)
    assert created.name == "fresh" and created.containers == () and created.size is None
    anonymous = await volumes.create(VolumeSpec())
    assert anonymous.name == "c" * 64
    assert engine.bodies == [
        {
            "Name": "fresh",
            "Driver": "local",
            "Labels": {"a": "b"},
            "DriverOpts": {"type": "tmpfs", "device": "tmpfs"},
        },
        {"Driver": "local", "Labels": {}, "DriverOpts": {}},
    ]
