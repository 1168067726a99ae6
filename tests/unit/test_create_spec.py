"""A create body read into a ContainerSpec, the Engine bodies made of specs and of inspect
documents (create and recreate), and which images an update can pull again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nekzus.errors import ApiError
from nekzus.http.container_spec import container_spec
from runtimes.docker.create import create_body
from runtimes.docker.update import pinned_reason, recreate_body
from runtimes.engine.creation import ContainerSpec, MountSpec, PortSpec, RestartPolicy

BASE = {"name": "web", "image": "nginx:1.25"}


def refused(body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ApiError) as caught:
        container_spec(body)
    error = caught.value
    assert (error.status, error.code) == (400, "VALIDATION_ERROR")
    assert error.message.startswith(f"{error.extra['field']}: ")
    return str(error.extra["field"]), error.message


def test_a_full_body_becomes_the_spec_it_describes() -> None:
    spec, start = container_spec(
        {
            **BASE,
            "command": ["nginx", "-g", "daemon off;"],
            "env": {"A": "1", "B_2": "x=y"},
            "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "protocol": "udp", "hostIp": "0:0::1"},
            ],
            "volumes": [
                {"source": "data", "target": "/data"},
                {"source": "/srv/x", "target": "/x", "mode": "ro"},
            ],
            "labels": {"team": "blue"},
            "restartPolicy": "on-failure:5",
            "start": False,
            "network": "backend",
        }
    )
    assert start is False
    assert spec == ContainerSpec(
        name="web",
        image="nginx:1.25",
        command=("nginx", "-g", "daemon off;"),
        env=(("A", "1"), ("B_2", "x=y")),
        ports=(PortSpec(80, 8080, "tcp", ""), PortSpec(53, None, "udp", "::1")),
        volumes=(MountSpec("data", "/data"), MountSpec("/srv/x", "/x", read_only=True)),
        labels={"team": "blue", "nekzus.enable": "true"},
        restart=RestartPolicy("on-failure", 5),
        network="backend",
    )


def test_defaults_start_it_linked_with_the_images_command() -> None:
    spec, start = container_spec(dict(BASE))
    assert start is True
    assert spec.command is None and spec.restart is None and spec.network is None
    assert spec.labels == {"nekzus.enable": "true"}
    unlinked, _ = container_spec({**BASE, "labels": {"nekzus.enable": "false"}})
    assert unlinked.labels == {"nekzus.enable": "false"}
    listed, _ = container_spec({**BASE, "env": ["A=1", "B=", "C=x=y"]})
    assert listed.env == (("A", "1"), ("B", ""), ("C", "x=y"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "nginx"}, "name"),
        ({"name": "web"}, "image"),
        ({**BASE, "name": None}, "name"),
        ({**BASE, "name": "-web"}, "name"),
        ({**BASE, "name": "a/b"}, "name"),
        ({**BASE, "name": 7}, "name"),
        ({**BASE, "image": "nginx:"}, "image"),
        ({**BASE, "image": "a" * 300}, "image"),
        ({**BASE, "command": []}, "command"),
        ({**BASE, "command": ["a\x00b"]}, "command[0]"),
        ({**BASE, "command": ["x" * 5000]}, "command[0]"),
        ({**BASE, "env": "A=1"}, "env"),
        ({**BASE, "env": {"1A": "x"}}, "env.1A"),
        ({**BASE, "env": {"A": 1}}, "env.A"),
        ({**BASE, "env": ["A=1", "A=2"]}, "env[1]"),
        ({**BASE, "env": {f"K{i}": "v" for i in range(257)}}, "env"),
        ({**BASE, "env": {f"K{i}": "v" * 30_000 for i in range(10)}}, "env"),
        ({**BASE, "ports": {"containerPort": 80}}, "ports"),
        ({**BASE, "ports": [80]}, "ports[0]"),
        ({**BASE, "ports": [{"hostPort": 80}]}, "ports[0].containerPort"),
        ({**BASE, "ports": [{"containerPort": 65536}]}, "ports[0].containerPort"),
        ({**BASE, "ports": [{"containerPort": "80"}]}, "ports[0].containerPort"),
        ({**BASE, "ports": [{"containerPort": 80, "hostPort": False}]}, "ports[0].hostPort"),
        ({**BASE, "ports": [{"containerPort": 80, "protocol": "TCP"}]}, "ports[0].protocol"),
        ({**BASE, "ports": [{"containerPort": 80, "hostIp": "256.1.1.1"}]}, "ports[0].hostIp"),
        (
            {**BASE, "ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 81, "hostPort": 80}]},
            "ports[1].hostPort",
        ),
        ({**BASE, "volumes": [{"source": "data"}]}, "volumes[0].target"),
        ({**BASE, "volumes": [{"source": "d", "target": "/d"}]}, "volumes[0].source"),
        ({**BASE, "volumes": [{"source": "../etc", "target": "/d"}]}, "volumes[0].source"),
        ({**BASE, "volumes": [{"source": "/a:b", "target": "/d"}]}, "volumes[0].source"),
        ({**BASE, "volumes": [{"source": "data", "target": "/"}]}, "volumes[0].target"),
        ({**BASE, "volumes": [{"source": "data", "target": "/d/../../etc"}]}, "volumes[0].target"),
        ({**BASE, "volumes": [{"source": "data", "target": "/d", "mode": "rwx"}]}, "volumes[0].mode"),
        (
            {**BASE, "volumes": [{"source": "a1", "target": "/d"}, {"source": "b1", "target": "/d/"}]},
            "volumes[1].target",
        ),
        ({**BASE, "volumes": [{"source": "a1", "target": "/d", "readOnly": True}]}, "volumes[0].readOnly"),
        ({**BASE, "labels": ["a=b"]}, "labels"),
        ({**BASE, "labels": {"a": 1}}, "labels.a"),
        ({**BASE, "labels": {"nekzus.app.id": "grafana"}}, "labels.nekzus.app.id"),
        ({**BASE, "labels": {"nekzus/enable": "true"}}, "labels.nekzus/enable"),
        ({**BASE, "labels": {"nekzus.enable": "yes"}}, "labels.nekzus.enable"),
        ({**BASE, "restartPolicy": "always:3"}, "restartPolicy"),
        ({**BASE, "restartPolicy": "on-failure:1001"}, "restartPolicy"),
        ({**BASE, "restartPolicy": "on-failure:-1"}, "restartPolicy"),
        ({**BASE, "restartPolicy": 3}, "restartPolicy"),
        ({**BASE, "start": 1}, "start"),
        ({**BASE, "network": "container:web"}, "network"),
        ({**BASE, "network": ""}, "network"),
    ],
)
def test_each_bad_value_is_refused_naming_its_field(body: dict[str, Any], field: str) -> None:
    assert refused(body)[0] == field


def test_nan_and_infinity_are_no_port() -> None:
    for number in (float("nan"), float("inf"), 1e400, 80.5):
        assert refused({**BASE, "ports": [{"containerPort": number}]})[0] == "ports[0].containerPort"


def test_the_create_body_publishes_ports_and_binds_volumes() -> None:
    spec, _ = container_spec(
        {
            **BASE,
            "command": ["x"],
            "env": {"A": "1"},
            "ports": [{"containerPort": 80}, {"containerPort": 80, "hostPort": 8080, "hostIp": "127.0.0.1"}],
            "volumes": [{"source": "data", "target": "/data", "mode": "ro"}],
            "restartPolicy": "unless-stopped",
            "network": "none",
        }
    )
    body = create_body(spec)
    assert body == {
        "Image": "nginx:1.25",
        "Cmd": ["x"],
        "Env": ["A=1"],
        "Labels": {"nekzus.enable": "true"},
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {
            "PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": ""}, {"HostIp": "127.0.0.1", "HostPort": "8080"}]
            },
            "Binds": ["data:/data:ro"],
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "NetworkMode": "none",
        },
    }
    assert "Cmd" not in create_body(container_spec(dict(BASE))[0])


OLD_ID = "ab" * 32
IMAGE = {
    "Config": {
        "Env": ["PATH=/usr/bin", "VERSION=1"],
        "Cmd": ["serve"],
        "Entrypoint": ["/entry"],
        "Labels": {"vendor": "acme"},
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/var/lib/app": {}},
        "WorkingDir": "/app",
    }
}
DOC: dict[str, Any] = {
    "Id": OLD_ID,
    "Image": "sha256:" + "cd" * 32,
    "Config": {
        "Hostname": OLD_ID[:12],
        "Image": "registry:5000/app:1",
        "Env": ["PATH=/usr/bin", "VERSION=1", "MODE=blue"],
        "Cmd": ["serve"],
        "Entrypoint": ["/entry"],
        "Labels": {"vendor": "acme", "nekzus.enable": "true"},
        "ExposedPorts": {"80/tcp": {}, "9090/tcp": {}},
        "Volumes": {"/var/lib/app": {}},
        "WorkingDir": "/app",
        "User": "app",
        "StopTimeout": 5,
    },
    "HostConfig": {
        "Binds": ["conf:/etc/app:ro"],
        "NetworkMode": "backend",
        "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
    },
    "Mounts": [
        {"Type": "volume", "Name": "conf", "Destination": "/etc/app", "RW": False},
        {"Type": "volume", "Name": "ef" * 32, "Destination": "/var/lib/app", "RW": True},
    ],
    "NetworkSettings": {
        "Networks": {
            "backend": {"Aliases": [OLD_ID[:12], "api"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}},
            "frontend": {"Aliases": [OLD_ID[:12]], "IPAMConfig": None},
        }
    },
}


def test_a_recreate_keeps_the_containers_own_settings_and_takes_the_new_images_defaults() -> None:
    original = copy.deepcopy(DOC)
    body, later = recreate_body(DOC, IMAGE, "registry:5000/app:1")
    assert original == DOC  # the inspect document is not changed in place
    assert body["Image"] == "registry:5000/app:1"
    assert "Hostname" not in body  # the old container's id as its hostname would be a lie
    assert body["Env"] == ["MODE=blue"]  # VERSION=1 came from the old image: the new one says
    assert body["Labels"] == {"nekzus.enable": "true"}
    assert body["ExposedPorts"] == {"9090/tcp": {}} and body["Volumes"] is None
    for key in ("Cmd", "Entrypoint", "WorkingDir"):
        assert key not in body, key
    assert body["User"] == "app" and body["StopTimeout"] == 5
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    # The anonymous volume goes to the new container; the named one was bound already.
    assert body["HostConfig"]["Binds"] == ["conf:/etc/app:ro", f"{'ef' * 32}:/var/lib/app:rw"]
    assert body["NetworkingConfig"] == {
        "EndpointsConfig": {"backend": {"Aliases": ["api"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}}}
    }
    assert later == {"frontend": {}}


def test_a_command_of_its_own_and_special_network_modes_are_kept() -> None:
    doc = copy.deepcopy(DOC)
    doc["Config"]["Entrypoint"] = ["/other"]
    doc["HostConfig"]["NetworkMode"] = "none"
    body, later = recreate_body(doc, IMAGE, "registry:5000/app:1")
    # Its own entrypoint reset the image's command when it was created: both stay as they are.
    assert body["Entrypoint"] == ["/other"] and body["Cmd"] == ["serve"]
    assert "NetworkingConfig" not in body and later == {}


@pytest.mark.parametrize(
    ("reference", "pinned"),
    [
        ("registry:5000/app:1", ""),
        ("busybox", ""),
        ("sha256:" + "cd" * 32, "image id"),
        ("cdcdcdcdcdcd", "image id"),
        ("", "image id"),
        ("app@sha256:" + "0" * 64, "digest"),
    ],
)
def test_only_a_tag_can_be_pulled_again(reference: str, pinned: str) -> None:
    doc = {"Image": "sha256:" + "cd" * 32, "Config": {"Image": reference}}
    reason = pinned_reason(doc)
    assert (pinned in reason) if pinned else reason == ""
