"""Image references, a pull's progress from the Engine's JSON lines, and the pace of its events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from nekzus.operations.pulls import MAX_PER_SECOND, PROGRESS_EVENT, pull_events
from nekzus.operations.tracker import JobProgress, Operation
from nekzus.realtime.events import Event, EventBus
from runtimes import NotFound, OperationFailed
from runtimes.docker.images import PullTally, pull_failure, repo_digest
from runtimes.engine.images import ImageName, PullProgress, is_image_reference

DIGEST = "sha256:" + "5f" * 32

VALID = [
    "busybox",
    "busybox:1.36",
    "library/busybox:latest",
    "docker.io/library/busybox",
    "ghcr.io/owner/app-name_x/tool.v2:v1.2.3-rc_1",
    "127.0.0.1:5000/nekzus/busybox:1",
    "localhost:5000/a",
    "Registry.Example.com/team/app",
    "[::1]:5000/app:1",
    f"app@{DIGEST}",
    f"app:1@{DIGEST}",
    "a__b/c---d",
    "app:" + "t" * 128,
    "a" * 255,
]

INVALID: list[object] = [
    "",
    " busybox",
    "busybox ",
    "bus box",
    "busybox:1 ",
    "Busybox",
    "team/App",
    "a..b",
    "../etc/passwd",
    "a/../b",
    "registry..example.com/app",
    "/busybox",
    "busybox/",
    "a//b",
    "busybox:",
    "busybox:-1",
    "busybox:.1",
    "app:" + "t" * 129,
    "a" * 256,
    "r" * 300,
    "app@sha256:abc",
    "app@md5:" + "0" * 32,
    f"app@{DIGEST.upper()}",
    "app:1:2",
    "app\n",
    "app\x00",
    "ap%2Fp",
    "-app",
    "app-",
    "app_",
    "a___b",
    "busybóx",
    None,
    5,
    ["busybox"],
    {"image": "busybox"},
]


@pytest.mark.parametrize("reference", VALID)
def test_references_docker_accepts_are_accepted(reference: str) -> None:
    assert is_image_reference(reference)


@pytest.mark.parametrize("reference", INVALID, ids=lambda value: repr(value)[:40])
def test_anything_else_is_refused(reference: object) -> None:
    assert not is_image_reference(reference)


@pytest.mark.parametrize(
    ("reference", "repository", "tag", "digest", "registry"),
    [
        ("busybox", "busybox", "latest", "", "docker.io"),
        ("team/app:2", "team/app", "2", "", "docker.io"),
        ("127.0.0.1:5000/nekzus/busybox", "127.0.0.1:5000/nekzus/busybox", "latest", "", "127.0.0.1:5000"),
        ("localhost/app:1", "localhost/app", "1", "", "localhost"),
        (f"ghcr.io/o/app:1@{DIGEST}", "ghcr.io/o/app", "1", DIGEST, "ghcr.io"),
        (f"app@{DIGEST}", "app", "", DIGEST, "docker.io"),
    ],
)
def test_a_reference_without_tag_or_digest_means_latest(
    reference: str, repository: str, tag: str, digest: str, registry: str
) -> None:
    name = ImageName.parse(reference)
    assert (name.repository, name.tag, name.digest, name.registry) == (repository, tag, digest, registry)
    assert str(name) == (f"{repository}@{digest}" if digest else f"{repository}:{tag}")


# What the Engine streamed for a pull of a one-layer image from the local registry (recorded; the
# text progress bars left out).
RECORDED = """\
{"status":"Pulling from nekzus/changed","id":"1"}
{"status":"Pulling fs layer","progressDetail":{},"id":"3b96d61128a8"}
{"status":"Downloading","progressDetail":{"current":36445,"total":1068884},"id":"3b96d61128a8"}
{"status":"Downloading","progressDetail":{"current":1068884,"total":1068884},"id":"3b96d61128a8"}
{"status":"Verifying Checksum","progressDetail":{},"id":"3b96d61128a8"}
{"status":"Download complete","progressDetail":{},"id":"3b96d61128a8"}
{"status":"Extracting","progressDetail":{"current":32768,"total":1068884},"id":"3b96d61128a8"}
{"status":"Extracting","progressDetail":{"current":1068884,"total":1068884},"id":"3b96d61128a8"}
{"status":"Pull complete","progressDetail":{},"id":"3b96d61128a8"}
{"status":"Digest: sha256:5fc3b5b5f8bae656b92728b85a386279490a0ea73352b2a998ef5c46d343944b"}
{"status":"Status: Downloaded newer image for 127.0.0.1:53211/nekzus/changed:1"}
"""

# Three layers: one the Engine has already, two downloaded side by side (one of unknown size).
INTERLEAVED = """\
{"status":"Pulling from team/app","id":"2"}
{"status":"Already exists","progressDetail":{},"id":"aaaaaaaaaaaa"}
{"status":"Pulling fs layer","progressDetail":{},"id":"bbbbbbbbbbbb"}
{"status":"Pulling fs layer","progressDetail":{},"id":"cccccccccccc"}
{"status":"Waiting","progressDetail":{},"id":"cccccccccccc"}
{"status":"Downloading","progressDetail":{"current":100,"total":1000},"id":"bbbbbbbbbbbb"}
{"status":"Downloading","progressDetail":{"current":500},"id":"cccccccccccc"}
{"status":"Downloading","progressDetail":{"current":600,"total":1000},"id":"bbbbbbbbbbbb"}
"""


def tally_of(text: str, reference: str = "ref") -> tuple[PullTally, list[PullProgress]]:
    tally = PullTally(reference)
    states = [state for line in text.splitlines() if (state := tally.add(json.loads(line))) is not None]
    return tally, states


def test_a_recorded_pull_adds_up_to_one_layer_and_all_its_bytes() -> None:
    tally, states = tally_of(RECORDED)
    assert [s.status for s in states] == ["pulling", "downloading", "downloading"] + ["downloading"] * 2 + [
        "extracting"
    ] * 3
    first_download = states[1]
    assert (first_download.layers_total, first_download.layers_done) == (1, 0)
    assert (first_download.bytes_done, first_download.bytes_total) == (36445, 1068884)
    assert states[-1] == PullProgress("ref", "extracting", 1, 1, 1068884, 1068884)
    assert tally.digest == "sha256:5fc3b5b5f8bae656b92728b85a386279490a0ea73352b2a998ef5c46d343944b"
    assert tally.finished() == PullProgress("ref", "complete", 1, 1, 1068884, 1068884)


def test_layers_are_counted_once_and_bytes_only_where_the_size_is_known() -> None:
    tally, states = tally_of(INTERLEAVED)
    last = states[-1]
    assert (last.layers_total, last.layers_done) == (3, 1)
    assert (last.bytes_done, last.bytes_total) == (600, 1000)
    # When the pull ends every layer is done, and the sized ones wholly downloaded.
    assert tally.finished() == PullProgress("ref", "complete", 3, 3, 1000, 1000)


def test_bytes_never_exceed_the_total_and_odd_lines_change_nothing() -> None:
    tally = PullTally("ref")
    odd: list[dict[str, Any]] = [
        {"status": "Status: Image is up to date for ref"},
        {"status": "Downloading", "progressDetail": "x", "id": "dddddddddddd"},
        {"status": "Downloading", "progressDetail": {"current": 5000, "total": 1000}, "id": "eeeeeeeeeeee"},
        {"status": "Downloading", "progressDetail": {"current": -3, "total": "big"}, "id": "ffffffffffff"},
        {"id": 7},
    ]
    last = [state for line in odd if (state := tally.add(line)) is not None][-1]
    assert (last.bytes_done, last.bytes_total, last.layers_total) == (1000, 1000, 3)


def test_an_error_line_fails_the_pull_in_words_of_our_own() -> None:
    tally = PullTally("registry.example.com/app:1")
    with pytest.raises(OperationFailed) as failed:
        tally.add({"errorDetail": {"message": "write /var/lib/x: no space left on device"}, "error": "..."})
    assert failed.value.detail == "registry.example.com/app:1: the Engine's disk is full"
    with pytest.raises(NotFound) as missing:
        tally.add({"error": "manifest for registry.example.com/app:1 not found: manifest unknown"})
    assert (missing.value.resource, missing.value.name) == ("image", "registry.example.com/app:1")


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("manifest unknown", NotFound, ""),
        ("pull access denied for app, repository does not exist", NotFound, ""),
        (
            'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
            OperationFailed,
            "registry 127.0.0.1:1 is not reachable from the Engine",
        ),
        (
            "unauthorized: authentication required <secret-token>",
            OperationFailed,
            "the registry refused access",
        ),
        ("net/http: request canceled (Client.Timeout exceeded)", OperationFailed, "did not answer in time"),
        ("<html>something new and strange</html>", OperationFailed, "the Engine could not pull it"),
    ],
)
def test_pull_failures_keep_the_engines_text_from_clients(
    text: str, kind: type[Exception], detail: str
) -> None:
    failure = pull_failure("127.0.0.1:1/x:1", text)
    assert isinstance(failure, kind)
    assert detail in failure.detail
    assert "<" not in failure.detail and "secret" not in failure.detail


def test_the_repo_digest_is_the_one_of_the_pulled_repository() -> None:
    doc = {"RepoDigests": [f"other/app@sha256:{'1' * 64}", f"busybox@{DIGEST}", "broken"]}
    assert repo_digest(doc, "docker.io/library/busybox") == DIGEST
    assert repo_digest(doc, "busybox") == DIGEST
    assert repo_digest(doc, "nothing/here") == ""
    assert repo_digest({}, "busybox") == ""


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.set()

    async def next(self) -> Event:
        """The next event published after this call."""
        count = len(self.events)
        async with asyncio.timeout(5):
            while len(self.events) == count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events[-1]


def job_progress() -> tuple[JobProgress, Recorder]:
    bus = EventBus()
    heard = Recorder()
    bus.add_listener(heard)
    op = Operation(
        id="op1", container_id="app:1", runtime="docker", namespace="", action="pull", started_at=0
    )
    return JobProgress(bus, op), heard


def state(done: int, status: str = "downloading") -> PullProgress:
    return PullProgress("app:1", status, 2, 0, done, 1000)  # type: ignore[arg-type]


async def test_progress_events_carry_the_operation_id_and_the_shape_clients_draw() -> None:
    progress, heard = job_progress()
    on_progress = pull_events(progress, "app:1")
    on_progress(state(10))  # the first state goes out at once
    (event,) = heard.events
    assert event.type == PROGRESS_EVENT
    data = dict(event.data)
    assert isinstance(data.pop("timestamp"), int)
    assert data == {
        "image": "app:1",
        "status": "downloading",
        "layers": {"total": 2, "done": 0},
        "bytes": {"done": 10, "total": 1000},
        "operationId": "op1",
    }


async def test_states_are_throttled_but_the_newest_one_is_never_lost() -> None:
    progress, heard = job_progress()
    on_progress = pull_events(progress, "app:1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = 0
    while loop.time() - started < 1.0:
        done += 1
        on_progress(state(done))
        await asyncio.sleep(0.005)  # a download's pace: a state every few milliseconds
    # The first state goes out at once, then at most one per interval.
    assert len(heard.events) <= 1 + MAX_PER_SECOND * (loop.time() - started)
    assert len(heard.events) >= 2
    # The last state of the burst was held back; it arrives when its turn comes.
    while heard.events[-1].data["bytes"]["done"] != done:
        await heard.next()
    published = [e.data["bytes"]["done"] for e in heard.events]
    assert published == sorted(published)


async def test_a_final_state_goes_out_at_once_and_nothing_after_it() -> None:
    progress, heard = job_progress()
    on_progress = pull_events(progress, "app:1")
    on_progress(state(1))
    on_progress(state(2))  # held back: within the interval
    on_progress(state(1000, "complete"))
    assert [e.data["bytes"]["done"] for e in heard.events] == [1, 1000]
    assert heard.events[-1].data["status"] == "complete"
    on_progress(state(3))
    with pytest.raises(TimeoutError):  # a held state would go out within the interval
        await asyncio.wait_for(heard.next(), timeout=2 / MAX_PER_SECOND)
    assert [e.data["status"] for e in heard.events] == ["downloading", "complete"]
