"""Stacks from the containers' compose labels and the managed files: grouping, one-offs, services,
status per stack and per service, when a stack last changed, and how one is rendered."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from nekzus.http.routes.stacks import stack_detail, stack_summary
from nekzus.stacks.files import ManagedStack, StackFiles
from nekzus.stacks.model import (
    COMPOSE_ACTIONS,
    CONFIG_FILES,
    ENGINE_ACTIONS,
    ONEOFF,
    PROJECT,
    SERVICE,
    STATUSES,
    WORKING_DIR,
    group_stacks,
    project_of,
)
from nekzus.stacks.service import Stacks
from runtimes import ContainerState, ContainerSummary, PortMapping
from tests.support.fakes import summary

RUNNING, EXITED, PAUSED = ContainerState.RUNNING, ContainerState.EXITED, ContainerState.PAUSED
EMPTY: Mapping[str, str] = {}


def member(
    n: int, project: str, service: str, state: ContainerState = RUNNING, labels: Mapping[str, str] = EMPTY
) -> ContainerSummary:
    base = summary(n, state=state)
    return dataclasses.replace(
        base,
        created=1_700_000_000 + n,
        labels={**base.labels, PROJECT: project, SERVICE: service, **labels},
    )


def managed(name: str, *services: str, updated_at: int = 1_800_000_000) -> ManagedStack:
    return ManagedStack(name, Path("/nowhere") / name, services, updated_at, has_env=False)


def test_containers_group_by_project_and_loose_ones_and_one_offs_are_left_out() -> None:
    where = {CONFIG_FILES: "/srv/shop/compose.yaml,/srv/shop/extra.yaml", WORKING_DIR: "/srv/shop"}
    containers = [
        member(1, "shop", "web", labels=where),
        member(2, "shop", "db", labels=where),
        member(3, "shop", "web", labels={ONEOFF: "True"}),
        summary(4),
        member(5, "blog", "app"),
    ]
    stacks = group_stacks(containers, [])
    assert list(stacks) == ["blog", "shop"]
    shop = stacks["shop"]
    assert [c.name for c in shop.containers] == ["fake-2", "fake-1"]  # by service, then name
    assert shop.services == ("db", "web")
    assert shop.config_files == ("/srv/shop/compose.yaml", "/srv/shop/extra.yaml")
    assert shop.working_dir == "/srv/shop"
    assert project_of(containers[2]) is None and project_of(containers[3]) is None
    assert project_of(containers[0]) == "shop"
    assert not shop.is_managed


def test_managed_files_lead_the_services_and_join_their_containers() -> None:
    containers = [member(1, "shop", "worker"), member(2, "shop", "web")]
    stacks = group_stacks(containers, [managed("shop", "web", "db"), managed("new")])
    assert stacks["shop"].services == ("web", "db", "worker")
    assert stacks["shop"].is_managed
    assert stacks["new"].containers == () and stacks["new"].services == ()


def test_status_of_a_stack_and_of_each_service() -> None:
    stacks = group_stacks(
        [
            member(1, "all", "a"),
            member(2, "all", "b"),
            member(3, "some", "a"),
            member(4, "some", "b", EXITED),
            member(5, "some", "b"),
            member(6, "none", "a", EXITED),
            member(7, "none", "b", PAUSED),
        ],
        [managed("bare"), managed("fresh", "a"), managed("some", "a", "b", "c")],
    )
    assert {name: s.status for name, s in stacks.items()} == {
        "all": "running",
        "bare": "unknown",
        "fresh": "stopped",
        "none": "stopped",
        "some": "partial",
    }
    assert set(STATUSES) == {s.status for s in stacks.values()}
    some = stacks["some"]
    assert some.running_services == 2
    assert [some.service_status(s) for s in ("a", "b", "c")] == ["running", "partial", "stopped"]
    assert stacks["none"].service_status("b") == "stopped"  # a paused container does not run


def test_updated_at_is_the_newest_of_files_and_containers() -> None:
    stacks = group_stacks(
        [member(1, "old", "a"), member(9, "old", "b")], [managed("old", "a", updated_at=5), managed("bare")]
    )
    assert stacks["old"].updated_at == 1_700_000_009
    assert stacks["bare"].updated_at == 1_800_000_000
    assert group_stacks([member(3, "loose", "a")], [])["loose"].updated_at == 1_700_000_003


async def test_a_stack_is_rendered_with_ports_health_and_actions_but_no_path(tmp_path: Path) -> None:
    compose = tmp_path / "srv" / "compose.yaml"
    compose.parent.mkdir()
    where = {CONFIG_FILES: str(compose), WORKING_DIR: str(compose.parent)}
    web = dataclasses.replace(
        member(1, "shop", "web", labels=where),
        ports=(PortMapping("0.0.0.0", 80, 8080, "tcp"),),
        health="healthy",
    )
    stacks = Stacks(StackFiles(tmp_path / "stacks"), None)
    stacks.claim("shop", "deploy")
    stack = group_stacks([web, member(2, "shop", "db", EXITED, where)], [])["shop"]
    # The files compose recorded are gone: the Engine's actions only.
    detail = await stack_detail(stacks, stack)
    assert detail["actions"] == list(ENGINE_ACTIONS)
    compose.write_text("services: {}\n")
    detail = await stack_detail(stacks, stack)
    assert detail["actions"] == list(COMPOSE_ACTIONS)
    assert {k: detail[k] for k in ("name", "status", "running", "managed", "busy")} == {
        "name": "shop",
        "status": "partial",
        "running": 1,
        "managed": False,
        "busy": "deploy",
    }
    db_service, web_service = detail["services"]  # services of containers alone: by name
    assert web_service == {
        "name": "web",
        "status": "running",
        "containers": [
            {
                "id": web.id,
                "name": web.name,
                "state": "running",
                "status": "Up",
                "image": "fake:latest",
                "ports": [{"ip": "0.0.0.0", "privatePort": 80, "publicPort": 8080, "type": "tcp"}],
                "created": web.created,
                "health": "healthy",
            }
        ],
    }
    assert db_service["name"] == "db" and db_service["status"] == "stopped"
    assert str(tmp_path) not in str(detail)
    assert stack_summary(stack, None) == {
        "name": "shop",
        "status": "partial",
        "services": 2,
        "running": 1,
        "managed": False,
        "updatedAt": 1_700_000_002,
        "busy": None,
    }
