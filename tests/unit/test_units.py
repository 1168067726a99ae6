"""Linking rules, self-detection, the operation tracker and the event bus, without a daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from nekzus.config import AppConfig
from nekzus.errors import ApiError
from nekzus.http.middlewares import request_id_middleware
from nekzus.linking import AppLinker, detect_self_container_id, is_self
from nekzus.operations.tracker import OperationTracker
from nekzus.params import timeout_value
from nekzus.realtime.events import Event, EventBus
from nekzus.realtime.logrequest import InvalidSubscription, parse_since
from runtimes import Action, ContainerRef, ContainerState, ContainerSummary
from runtimes.redact import is_secret_name, mask_env_list, mask_value
from tests.support.fakes import FakeRuntime, summary
from tests.support.gateway import Heard


def with_labels(labels: dict[str, str], annotations: dict[str, str] | None = None) -> ContainerSummary:
    base = summary(1, linked=False)
    return ContainerSummary(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "labels": labels,
            "annotations": annotations or {},
        }
    )


def test_linking_rules() -> None:
    linker = AppLinker([AppConfig(id="grafana", name="Grafana")])
    assert linker.app_of(with_labels({"nekzus.http.app.id": "grafana"})) == ("grafana", "Grafana")
    assert linker.app_of(with_labels({"nekzus.http.app.id": "other"})) is None
    assert linker.app_of(with_labels({"nekzus.enable": "true"})) == ("fake-1", "fake-1")
    assert linker.app_of(with_labels({"nekzus.enable": "TRUE", "nekzus.http.app.id": "x"})) == ("x", "x")
    assert linker.app_of(with_labels({"nekzus.enable": "false"})) is None
    assert linker.app_of(with_labels({})) is None
    # Pods: the same keys as annotations, and the nekzus/ spellings.
    assert linker.is_linked(with_labels({}, {"nekzus/enable": "true"}))
    assert linker.app_of(with_labels({}, {"nekzus/app-id": "grafana"})) == ("grafana", "Grafana")


def test_detect_self_container_id(tmp_path: Path) -> None:
    cid = "a" * 12 + "0123456789abcdef" * 3 + "bcde"
    assert len(cid) == 64
    (tmp_path / "mountinfo").write_text(
        "1 0 8:1 / / rw - overlay overlay rw\n"
        f"2 1 8:1 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
    )
    assert detect_self_container_id(tmp_path) == cid
    (tmp_path / "mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text(f"12:memory:/docker/{cid}\n")
    assert detect_self_container_id(tmp_path) == cid
    (tmp_path / "cgroup").write_text("0::/user.slice\n")
    assert detect_self_container_id(tmp_path) == ""
    assert detect_self_container_id(tmp_path / "absent") == ""


def test_is_self() -> None:
    c = summary(7)
    assert is_self(c, c.full_id)
    assert is_self(c, c.full_id[:12])
    assert not is_self(c, "")
    assert not is_self(c, summary(8).full_id)


def test_timeouts_are_ascii_digits_only() -> None:
    assert [timeout_value(v) for v in (None, "1", "+7", "300", 42)] == [10, 1, 7, 300, 42]
    for bad in ("٣", "５", "1٣", "5\n", " 5", "", "1e2", True, 2.0):
        with pytest.raises(ApiError) as info:
            timeout_value(bad)
        assert info.value.code == "INVALID_TIMEOUT", bad


def test_since_takes_ascii_digits_only() -> None:
    assert parse_since("1700000000.5") == (1_700_000_000, 500_000_000)
    assert parse_since("2024-01-02T03:04:05.1+01:00") == (1_704_161_045, 100_000_000)
    for bad in ("١٧٠٠٠٠٠٠٠٠", "１７００", "２０２４-01-02T03:04:05Z", "2024-01-02T03:04:05Z\nx"):
        with pytest.raises(InvalidSubscription):
            parse_since(bad)


async def test_request_id_with_a_trailing_newline_is_replaced() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    for incoming, kept in (("abc-123", True), ("abc-123\n", False), ("abc\r\nX-Evil: 1", False)):
        request = make_mocked_request("GET", "/", headers={"X-Request-ID": incoming})
        response = await request_id_middleware(request, handler)
        assert (response.headers["X-Request-ID"] == incoming) is kept, incoming
        assert "\n" not in response.headers["X-Request-ID"]


def test_secret_names() -> None:
    for name in ("DB_PASSWORD", "passwd", "AWS_SECRET_ACCESS_KEY", "GH_TOKEN", "api-key", "PRIVATE_KEY_PEM"):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "PASS_THROUGH", "KEYBOARD"):
        assert not is_secret_name(name), name
    assert mask_env_list(["A=1", "MY_TOKEN=x=y", "NOVALUE"]) == ["A=1", "MY_TOKEN=***", "NOVALUE"]


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        # A URL's password, whatever the variable's name; scheme, user, host, path and query stay.
        ("DATABASE_URL", "postgres://u:s3cret@db/x", "postgres://u:***@db/x"),
        ("BACKEND", "redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("X", "postgres://u:p@ss@db/x?sslmode=require", "postgres://u:***@db/x?sslmode=require"),
        (
            "X",
            "mongodb://u:pw@h1:27017,h2:27017/db?replicaSet=rs",
            "mongodb://u:***@h1:27017,h2:27017/db?replicaSet=rs",
        ),
        ("BROKERS", "amqp://u:p1@h1;amqp://u:p2@h2", "amqp://u:***@h1;amqp://u:***@h2"),
        ("X", "http://a:1@h x http://b:2@k", "http://a:***@h x http://b:***@k"),
        # Query parameters whose names look secret.
        ("HOOK", "https://h/p?token=abc&x=1#top", "https://h/p?token=***&x=1#top"),
        (
            "X",
            "postgres://db/x?sslpassword=k&sslmode=verify-full",
            "postgres://db/x?sslpassword=***&sslmode=verify-full",
        ),
        # Connection names: a user without a password is a token; key=value strings with a password.
        ("SENTRY_DSN", "https://abc123@o1.ingest.example/1", "https://***@o1.ingest.example/1"),
        ("GIT_REMOTE_URI", "https://ghp_x@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("DB_CONNECTION_STRING", "Server=db;User Id=sa;Password=p@ss;", "***"),
        ("PG_DSN", "host=db user=u password=secret", "***"),
        ("ODBC_CONN", "DSN=x;UID=u;PWD=pw", "***"),
        # A password that breaks the syntax is hidden up to the last "@", never shown in part.
        ("X", "postgres://u:pa/ss@db/x", "postgres://u:***@db/x"),
        ("X", "postgres://u:p@ss/w@db/x", "postgres://u:***@db/x"),
        ("X", "redis://u:pa ss@h/0", "redis://u:***@h/0"),
        ("X", "redis://h: pw@h/0", "redis://h:***@h/0"),
        ("X", "amqp://u:p?w#d@h", "amqp://u:***@h"),
        # URLs inside other text.
        ("X", "jdbc:postgresql://u:pw@h/db", "jdbc:postgresql://u:***@h/db"),
        ("JAVA_OPTS", "-Xmx1g -Ddb=postgres://u:pw@h/x", "-Xmx1g -Ddb=postgres://u:***@h/x"),
        # Nothing secret: shown as it is.
        ("HOMEPAGE", "https://example.com/@someone", "https://example.com/@someone"),
        ("UPSTREAM", "ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),
        ("API_URL", "http://api:8080/v1", "http://api:8080/v1"),
        ("X", "postgres://u:@db/x", "postgres://u:@db/x"),
        ("DB_CONN_TIMEOUT", "30", "30"),
        ("PATH", "/usr/bin:/bin", "/usr/bin:/bin"),
    ],
)
def test_credentials_in_urls_and_connection_strings_are_masked(name: str, value: str, shown: str) -> None:
    assert mask_value(name, value) == shown
    assert mask_env_list([f"{name}={value}"]) == [f"{name}={shown}"]


async def test_operations_on_one_container_run_in_order() -> None:
    fake = FakeRuntime([summary(1, state=ContainerState.EXITED)])
    fake.hold_actions = True
    bus = EventBus()
    sub = Heard(bus)
    tracker = OperationTracker(bus, retention_seconds=600, max_records=100)
    ref = ContainerRef(summary(1).full_id)
    first = tracker.submit(fake, ref, "start", container_id="c", timeout=10)
    second = tracker.submit(fake, ref, "stop", container_id="c", timeout=10)
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)
    assert second.state == "pending"
    fake.release.set()
    async with asyncio.timeout(5):
        await second.done.wait()
    assert first.state == second.state == "completed"
    assert fake.max_active == 1
    types = []
    for _ in range(2):
        event = await sub.get()
        types.append(event.type)
    assert types == ["container.start.completed", "container.stop.completed"]
    await tracker.close()


async def test_records_are_bounded_and_pending_ones_kept() -> None:
    fake = FakeRuntime([summary(n) for n in range(300)])
    tracker = OperationTracker(EventBus(), retention_seconds=600, max_records=100)
    ops = [
        tracker.submit(fake, ContainerRef(summary(n).full_id), "restart", container_id=str(n), timeout=1)
        for n in range(100)
    ]
    async with asyncio.timeout(5):
        await asyncio.gather(*(op.done.wait() for op in ops))
    fake.hold_actions = True
    pending = tracker.submit(fake, ContainerRef(summary(200).full_id), "stop", container_id="p", timeout=1)
    assert len(tracker) <= 100
    assert tracker.get(pending.id) is pending
    assert tracker.get(ops[-1].id) is ops[-1]  # the newest finished records stay
    assert tracker.get(ops[0].id) is None  # the oldest went first
    await tracker.close()
    assert pending.state == "failed"


async def test_shutdown_cancels_running_operations() -> None:
    fake = FakeRuntime([summary(1)])
    fake.hold_actions = True
    tracker = OperationTracker(EventBus(), retention_seconds=600, max_records=100)
    op = tracker.submit(fake, ContainerRef(summary(1).full_id), "stop", container_id="c", timeout=1)
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)
    await tracker.close()
    assert op.state == "failed"
    assert "shut down" in op.message


async def test_each_runtime_has_its_own_bound_on_starts() -> None:
    docker = FakeRuntime([summary(1, state=ContainerState.EXITED)])
    kube = FakeRuntime([summary(2, state=ContainerState.EXITED)], name="kubernetes")
    for fake in (docker, kube):
        fake.hold_actions = True
    tracker = OperationTracker(EventBus(), retention_seconds=600, max_records=100, concurrency=1)
    ops = [
        tracker.submit(fake, ContainerRef(summary(n).full_id), "start", container_id=str(n), timeout=1)
        for fake, n in ((docker, 1), (kube, 2))
    ]

    async def one_active(fake: FakeRuntime) -> None:
        async with fake.changed:
            await fake.changed.wait_for(lambda: fake.active == 1)

    # A start waiting on one engine does not hold up a start on another.
    async with asyncio.timeout(5):
        await asyncio.gather(one_active(docker), one_active(kube))
    for fake in (docker, kube):
        fake.release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*(op.done.wait() for op in ops))
    assert all(op.state == "completed" for op in ops)
    await tracker.close()


def test_event_bus_hands_each_event_to_every_listener_at_once_until_removed() -> None:
    bus = EventBus()
    first: list[Event] = []
    second: list[Event] = []
    bus.add_listener(first.append)
    bus.add_listener(second.append)
    published = bus.publish("t", {"n": 0})
    assert first == second == [published] == [Event("t", {"n": 0})]
    bus.remove_listener(first.append)
    bus.publish("t", {"n": 1})
    assert [e.data["n"] for e in first] == [0]
    assert [e.data["n"] for e in second] == [0, 1]


@pytest.mark.parametrize("state", list(ContainerState))
def test_running_states(state: ContainerState) -> None:
    expected = state in (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)
    assert state.is_running is expected


async def test_tracker_bounds_starts_but_never_stops_or_restarts() -> None:
    stopped = [summary(n, state=ContainerState.EXITED) for n in range(4)]
    running = [summary(n) for n in range(4, 10)]
    fake = FakeRuntime(stopped + running)
    fake.hold_actions = True
    tracker = OperationTracker(EventBus(), retention_seconds=600, max_records=100, concurrency=2)
    ops = [
        tracker.submit(fake, ContainerRef(c.full_id), "start", container_id=c.id, timeout=1) for c in stopped
    ]
    ops += [
        tracker.submit(fake, ContainerRef(c.full_id), action, container_id=c.id, timeout=1)
        for c, action in zip(running, cast(list[Action], ["stop", "restart"] * 3), strict=True)
    ]
    # Two starts plus every stop and restart: those wait out grace periods, not each other.
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 2 + len(running))
    assert all(op.state == "pending" for op in ops)
    fake.release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*(op.done.wait() for op in ops))
    assert fake.max_active == 2 + len(running)
    assert all(op.state == "completed" for op in ops)
    await tracker.close()
