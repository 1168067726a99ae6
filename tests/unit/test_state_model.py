"""The tests of state model that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_state_model.py.
"""

from __future__ import annotations

import time

import pytest

from nekzus.realtime.events import Event
from nekzus.realtime.state import ContainerModel, RenderedList, RenderedLists, StateModels
from runtimes import ContainerState
from runtimes.docker.states import human_duration, parse_time
from tests.docker.test_state_model import lifetime, row
from tests.support.gateway import make_config


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (59.9, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (13 * 86400, "13 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (730 * 86400, "2 years"),
    ],
)
def test_human_duration_follows_the_docker_cli(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_parse_time_keeps_the_fraction_of_nanosecond_times() -> None:
    assert parse_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456)
    assert parse_time("2024-05-01T10:00:00Z") == 1714557600.0
    assert parse_time("2024-05-01T12:00:00.5+02:00") == 1714557600.5
    assert parse_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_time("not a time") == 0.0


def test_status_line_is_rendered_at_the_time_it_is_shown() -> None:
    running = lifetime("running")
    assert running.status_line(1005) == "Up 5 seconds"
    assert running.status_line(1000 + 300) == "Up 5 minutes"
    assert lifetime("running", health="healthy").status_line(1002) == "Up 2 seconds (healthy)"
    assert lifetime("running", health="unhealthy").status_line(1002) == "Up 2 seconds (unhealthy)"
    assert lifetime("running", health="starting").status_line(1002) == "Up 2 seconds (health: starting)"
    assert lifetime("paused").status_line(1090) == "Up About a minute (Paused)"
    assert lifetime("restarting", finished=1010, code=3).status_line(1013) == "Restarting (3) 3 seconds ago"
    assert lifetime("exited", finished=2000, code=137).status_line(2000 + 7200) == "Exited (137) 2 hours ago"
    assert lifetime("created", started=0).status_line(5000) == "Created"
    assert lifetime("dead").status_line(5000) == "Dead"
    assert lifetime("removing").status_line(5000) == "Removal In Progress"
    assert lifetime("exited", finished=0).status_line(5000) == ""


def test_model_is_warm_only_after_a_full_listing_and_until_it_cools() -> None:
    model = ContainerModel("docker")
    assert not model.warm
    model.fill([row("a"), row("b")], time.monotonic())
    assert model.warm
    assert sorted(s.id for s in model.summaries(1010)) == ["a", "b"]
    assert model.summaries(1010)[0].status == "Up 10 seconds"
    version = model.version
    model.refresh(["a"], [], time.monotonic())  # "a" is gone
    assert [s.id for s in model.summaries(1010)] == ["b"] and model.version > version
    model.cool()
    assert not model.warm
    model.fill([row("b")], time.monotonic())
    assert model.warm


def test_a_finished_action_keeps_the_model_cold_until_its_container_is_reread() -> None:
    model = ContainerModel("docker")
    model.fill([row("a"), row("b")], time.monotonic())
    assert not model.expect("zzz")  # not a container of this model: nothing to wait for
    assert model.warm
    assert model.expect("a")
    assert model.wanted.is_set() and not model.warm
    assert model.pending() == ["a"] and not model.wanted.is_set()
    model.refresh(["a"], [row("a", ContainerState.EXITED)], time.monotonic())
    assert model.warm
    assert {s.id: s.state for s in model.summaries(1010)}["a"] is ContainerState.EXITED


def test_a_created_container_keeps_the_model_cold_until_it_is_read() -> None:
    """A create's completion names a container the model has not heard of yet: a list right after
    it must come from the runtime, which already has it."""
    models = StateModels()
    model = models.models["docker"] = ContainerModel("docker")
    model.fill([row("a")], time.monotonic())
    models.on_event(Event("container.create.completed", {"containerId": "new"}))
    assert not model.warm and model.pending() == ["new"]
    model.refresh(["new"], [row("new")], time.monotonic())
    assert model.warm and {s.id for s in model.summaries(1010)} == {"a", "new"}
    models.on_event(
        Event("container.update.completed", {"containerId": "newer", "previousContainerId": "new"})
    )
    assert sorted(model.pending()) == ["new", "newer"]


def test_a_read_begun_before_an_action_finished_does_not_clear_its_mark() -> None:
    model = ContainerModel("docker")
    model.fill([row("a"), row("b")], time.monotonic())
    read_at = time.monotonic()
    assert model.expect("a")  # the action ends while the re-read (or resync) is on its way
    model.refresh(["a"], [row("a")], read_at)
    assert not model.warm and model.find("a", 1010) is None
    model.fill([row("a"), row("b")], read_at)
    assert not model.warm and model.wanted.is_set()  # the watcher reads it again
    model.refresh(model.pending(), [row("a", ContainerState.EXITED)], time.monotonic())
    assert model.warm and model.find("a", 1010) == row("a", ContainerState.EXITED).at(1010)


def test_find_resolves_names_and_ids_as_the_engine_does() -> None:
    model = ContainerModel("docker")
    a, b = row("aaaaaaaaaaaa"), row("bbbbbbbbbbbb")
    assert model.find("n-aaaaaaaaaaaa", 1010) is None  # not warm: the runtime answers
    model.fill([a, b], time.monotonic())
    assert model.find(a.summary.full_id, 1010) == a.at(1010)
    assert model.find("aaaaaaaaaaaa", 1010) == a.at(1010)
    assert model.find(a.summary.full_id[:20], 1010) == a.at(1010)
    assert model.find("n-bbbbbbbbbbbb", 1010) == b.at(1010)
    # What the model cannot tell apart the Engine decides: short prefixes, unknown names.
    assert model.find("aaaa", 1010) is None and model.find("n-zzz", 1010) is None
    # A container the gateway just acted on is the runtime's to answer until it is re-read; the
    # others are still served from the model.
    model.expect("aaaaaaaaaaaa")
    assert model.find("aaaaaaaaaaaa", 1010) is None
    assert model.find("bbbbbbbbbbbb", 1010) == b.at(1010)
    model.cool()
    assert model.find("bbbbbbbbbbbb", 1010) is None


def test_a_stack_action_keeps_the_model_cold_until_its_containers_are_reread() -> None:
    """A stack action names the containers it may have touched: those the model has (changed or
    removed since) and new ones alike are re-read before the model serves again."""
    models = StateModels()
    model = models.models["docker"] = ContainerModel("docker")
    model.fill([row("a"), row("b")], time.monotonic())
    models.expect("kubernetes", ["a"])  # a runtime without a model: nothing to do
    assert model.warm
    models.expect("docker", ["a", "new"])
    assert not model.warm and sorted(model.pending()) == ["a", "new"]
    model.refresh(["a", "new"], [row("new")], time.monotonic())
    assert model.warm and {s.id for s in model.summaries(1010)} == {"b", "new"}


def test_state_models_mark_pending_from_operation_events_of_their_containers() -> None:
    state = StateModels()
    model = ContainerModel("docker")
    model.fill([row("a")], time.monotonic())
    state.models["docker"] = model
    from nekzus.realtime.events import Event

    state.on_event(Event("container.state", {"containerId": "a"}))
    assert model.warm
    state.on_event(Event("container.stop.completed", {"containerId": "a", "namespace": "ns"}))
    assert model.warm  # a pod's operation: pods are not modelled
    state.on_event(Event("container.stop.completed", {"containerId": "a"}))
    assert not model.warm


def test_rendered_lists_live_one_second() -> None:
    rendered = RenderedLists()
    key = (("docker",), "", False, (1,))
    assert rendered.get(key, 10) is None
    empty = RenderedList(b"[]", {"X-Total-Count": "0"})
    rendered.put(key, 10, empty)
    assert rendered.get(key, 10) == empty
    assert rendered.get((("docker",), "", True, (1,)), 10) is None
    assert rendered.get(key, 11) is None
    rendered.put(key, 10, RenderedList(b"old", {}))  # made in a second that has passed: not kept
    assert rendered.get(key, 11) is None


async def test_resync_interval_is_validated(docker_host: str) -> None:
    from nekzus.config import ConfigError

    with pytest.raises((ValueError, ConfigError)):
        make_config(docker_host, runtimes={"docker": {"host": docker_host, "resync_interval": 0}})
