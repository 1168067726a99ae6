"""The compose conversion on inspect documents shaped like the Engine's: every rule of what is
written and what is left out, including what the test daemon cannot make (user-defined networks,
devices, privileged containers, other logging drivers)."""

from __future__ import annotations

from typing import Any

import yaml

from nekzus.export import build, unique_names
from runtimes.docker.compose import docker_service, duration
from runtimes.kubernetes.compose import pod_services

IMAGE = {
    "Config": {
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Env": ["PATH=/usr/bin", "NGINX_VERSION=1.25"],
        "Labels": {"maintainer": "NGINX"},
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/var/cache/nginx": {}},
        "StopSignal": "SIGQUIT",
    }
}


def container(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Id": "0123456789ab" + "c" * 52,
        "Name": "/web",
        # What the image sets, the container has too: only the name and the hostname are its own.
        "Config": {**IMAGE["Config"], "Image": "nginx:1.25", "Hostname": "0123456789ab"},
        "HostConfig": {
            "NetworkMode": "bridge",
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "json-file", "Config": {}},
            "IpcMode": "private",
            "ShmSize": 64 << 20,
            "CapAdd": None,
            "CapDrop": None,
        },
        "NetworkSettings": {"Networks": {"bridge": {"Aliases": None}}},
        "Mounts": [
            {"Type": "volume", "Name": "f" * 64, "Destination": "/var/cache/nginx", "Driver": "local"}
        ],
    }
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if key:
            doc[section][key] = value
        else:
            doc[section] = value
    return doc


def service(doc: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return docker_service(doc, IMAGE, "json-file", **flags).body


def test_a_container_as_its_image_made_it_is_just_image_and_name() -> None:
    assert service(container()) == {"image": "nginx:1.25", "container_name": "web"}


def test_command_and_entrypoint_only_where_they_differ() -> None:
    assert service(container(Config__Cmd=["nginx", "-T"]))["command"] == ["nginx", "-T"]
    # A new entrypoint clears the image's command, so the container's command goes with it.
    body = service(container(Config__Entrypoint=["/bin/sh", "-c"]))
    assert body["entrypoint"] == ["/bin/sh", "-c"] and body["command"] == ["nginx", "-g", "daemon off;"]
    body = service(container(Config__Entrypoint=None, Config__Cmd=["sleep", "1"]))
    assert body["entrypoint"] == [] and body["command"] == ["sleep", "1"]


def test_environment_labels_and_defaults_the_image_sets_are_left_out() -> None:
    draft = docker_service(
        container(
            Config__Env=["PATH=/usr/bin", "NGINX_VERSION=1.26", "MODE=prod"],
            Config__Labels={"maintainer": "NGINX", "app": "web", "com.docker.compose.project": "old"},
        ),
        IMAGE,
        "json-file",
    )
    assert draft.environment == [("NGINX_VERSION", "1.26"), ("MODE", "prod")]
    assert draft.body["labels"] == {"app": "web"}
    assert "volumes" not in draft.body  # the image's own VOLUME


def test_ports_publish_as_asked() -> None:
    bindings = {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::1", "HostPort": "8081"}],
        "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
        "9000/tcp": [{"HostIp": "", "HostPort": ""}],
    }
    body = service(
        container(HostConfig__PortBindings=bindings, Config__ExposedPorts={"80/tcp": {}, "7000/tcp": {}})
    )
    assert body["ports"] == ["5353:53/udp", "8080:80", "[::1]:8081:80", "127.0.0.1:8443:443", "9000"]
    assert body["expose"] == ["7000"]


def test_volumes_binds_mounts_and_tmpfs() -> None:
    body_and_volumes = docker_service(
        container(
            HostConfig__Binds=["data:/srv/data", "/etc/web:/etc/web:ro"],
            HostConfig__Mounts=[
                {"Type": "volume", "Source": "logs", "Target": "/var/log", "ReadOnly": True},
                {"Type": "bind", "Source": "/run/sock", "Target": "/sock"},
                {"Type": "tmpfs", "Target": "/scratch"},
            ],
            HostConfig__Tmpfs={"/run": "size=64m", "/tmp": ""},
            Config__Volumes={"/var/cache/nginx": {}, "/extra": {}},
        ),
        IMAGE,
        "json-file",
    )
    body = body_and_volumes.body
    assert body["volumes"] == [
        "data:/srv/data",
        "/etc/web:/etc/web:ro",
        "logs:/var/log:ro",
        "/run/sock:/sock",
        "/extra",
    ]
    assert body["tmpfs"] == ["/scratch", "/run:size=64m", "/tmp"]
    assert body_and_volumes.named_volumes == {"data": {}, "logs": {}}
    left_out = docker_service(
        container(HostConfig__Binds=["data:/srv/data"]), IMAGE, "json-file", include_volumes=False
    )
    assert "volumes" not in left_out.body and left_out.named_volumes == {}
    assert left_out.warnings == ["Volumes of 'web' were left out (include_volumes is false)"]


def test_networks() -> None:
    networks = {
        "shop": {"Aliases": ["0123456789ab", "web", "frontend"], "IPAMConfig": {"IPv4Address": "10.5.0.9"}},
        "metrics": {"Aliases": ["0123456789ab"]},
    }
    draft = docker_service(
        container(HostConfig__NetworkMode="shop", NetworkSettings={"Networks": networks}), IMAGE, "json-file"
    )
    assert draft.body["networks"] == {
        "shop": {"aliases": ["frontend"], "ipv4_address": "10.5.0.9"},
        "metrics": {},
    }
    assert draft.named_networks == {
        "shop": {"name": "shop", "external": True},
        "metrics": {"name": "metrics", "external": True},
    }
    plain = docker_service(
        container(HostConfig__NetworkMode="metrics", NetworkSettings={"Networks": {"metrics": {}}}), IMAGE, ""
    )
    assert plain.body["networks"] == ["metrics"]
    assert "networks" not in service(
        container(HostConfig__NetworkMode="shop", NetworkSettings={"Networks": networks}),
        include_networks=False,
    )
    for mode in ("none", "host"):
        assert service(container(HostConfig__NetworkMode=mode))["network_mode"] == mode
    # The default bridge, and no network at all, emit nothing.
    assert "networks" not in service(container()) and "network_mode" not in service(container())
    assert service(container(NetworkSettings=None, HostConfig__NetworkMode="")) == {
        "image": "nginx:1.25",
        "container_name": "web",
    }


def test_host_settings_that_differ_from_docker_defaults() -> None:
    host = {
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "CapAdd": ["CAP_NET_ADMIN", "CHOWN"],
        "CapDrop": ["CAP_MKNOD", "SYS_ADMIN"],
        "Privileged": True,
        "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
                    {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/xvda", "CgroupPermissions": "r"}],
        "ExtraHosts": ["db:10.0.0.5"],
        "LogConfig": {"Type": "journald", "Config": {"tag": "web"}},
        "IpcMode": "host",
        "Init": True,
        "Memory": 256 << 20,
        "NanoCpus": 1_500_000_000,
    }  # fmt: skip
    doc = container(**{f"HostConfig__{k}": v for k, v in host.items()})
    draft = docker_service(doc, IMAGE, "json-file")
    body = draft.body
    assert body["restart"] == "on-failure:3"
    assert body["cap_add"] == ["NET_ADMIN"] and body["cap_drop"] == ["MKNOD"]
    assert body["privileged"] is True
    assert "Container 'web' runs privileged: it has full access to the host" in draft.warnings
    assert body["devices"] == ["/dev/fuse:/dev/fuse", "/dev/sda:/dev/xvda:r"]
    assert body["extra_hosts"] == ["db:10.0.0.5"]
    assert body["logging"] == {"driver": "journald", "options": {"tag": "web"}}
    assert (body["ipc"], body["init"], body["mem_limit"], body["cpus"]) == ("host", True, 256 << 20, 1.5)
    # The daemon's own default driver without options is no logging block at all.
    assert (
        "logging"
        not in docker_service(container(HostConfig__LogConfig={"Type": "journald"}), IMAGE, "journald").body
    )


def test_healthcheck_user_hostname() -> None:
    check = {
        "Test": ["CMD", "curl", "-f", "http://localhost"],
        "Interval": 30_000_000_000,
        "Timeout": 1_500_000_000,
        "Retries": 3,
    }
    body = service(
        container(
            Config__Healthcheck=check,
            Config__User="nginx",
            Config__WorkingDir="/srv",
            Config__Hostname="web-1",
        )
    )
    assert body["healthcheck"] == {
        "test": ["CMD", "curl", "-f", "http://localhost"],
        "interval": "30s",
        "timeout": "1500ms",
        "retries": 3,
    }
    assert (body["user"], body["working_dir"], body["hostname"]) == ("nginx", "/srv", "web-1")
    assert service(container(Config__Healthcheck={"Test": ["NONE"]}))["healthcheck"] == {"disable": True}
    assert duration(250_000) == "250us" and duration(7) == "7ns"


def test_dollar_signs_are_escaped_and_secrets_become_variables() -> None:
    draft = docker_service(
        container(
            Config__Cmd=["echo", "$HOME"],
            Config__Env=["DB_PASSWORD=pa$$", "PRICE=$5"],
            Config__Labels={"cost": "$1"},
        ),
        IMAGE,
        "json-file",
    )
    export = build([draft], base="web", sanitize=True)
    web = yaml.safe_load(export.content)["services"]["web"]
    assert web["command"] == ["echo", "$$HOME"]
    assert web["environment"] == ["DB_PASSWORD=${DB_PASSWORD}", "PRICE=$$5"]
    assert web["labels"] == {"cost": "$$1"}
    assert export.env_content == "DB_PASSWORD=your_db_password_here\n"
    inline = yaml.safe_load(build([draft], base="web", sanitize=False).content)["services"]["web"]
    assert inline["environment"] == ["DB_PASSWORD=pa$$$$", "PRICE=$$5"]


def test_credentials_in_urls_become_variables_and_the_url_keeps_its_shape() -> None:
    env = [
        "DATABASE_URL=postgres://u:pa$$@db/x",
        "SENTRY_DSN=https://k3y@sentry.example/1",
        "HOME_URL=http://h/$x",
    ]
    drafts = [
        docker_service(container(Config__Env=env), IMAGE, "json-file"),
        docker_service(container(Config__Env=["DATABASE_URL=postgres://u:other@db/x"]), IMAGE, "json-file"),
    ]
    export = build(drafts, base="stack", sanitize=True)
    services = yaml.safe_load(export.content)["services"]
    assert services["web"]["environment"] == [
        "DATABASE_URL=postgres://u:${DATABASE_URL_PASSWORD}@db/x",
        "SENTRY_DSN=https://${SENTRY_DSN_USER}@sentry.example/1",
        "HOME_URL=http://h/$$x",
    ]
    # Another service's different password gets its own variable.
    assert services["web-2"]["environment"] == [
        "DATABASE_URL=postgres://u:${WEB_2_DATABASE_URL_PASSWORD}@db/x"
    ]
    assert export.env_content.splitlines() == [
        "DATABASE_URL_PASSWORD=your_database_url_password_here",
        "SENTRY_DSN_USER=your_sentry_dsn_user_here",
        "WEB_2_DATABASE_URL_PASSWORD=your_web_2_database_url_password_here",
    ]
    assert "pa$$" not in export.content and "k3y" not in export.content and "other" not in export.content
    inline = yaml.safe_load(build(drafts, base="stack", sanitize=False).content)["services"]["web"]
    assert inline["environment"][0] == "DATABASE_URL=postgres://u:pa$$$$@db/x"


def test_service_names_are_made_unique() -> None:
    assert unique_names(["web", "db", "web", "web", "web-2"]) == ["web", "db", "web-3", "web-4", "web-2"]
    drafts = [docker_service(container(), IMAGE, "json-file") for _ in range(3)]
    export = build(drafts, base="stack", sanitize=True)
    assert list(yaml.safe_load(export.content)["services"]) == ["web", "web-2", "web-3"]
    assert export.filename == "stack-compose.yaml" and export.env_filename == "stack.env"


def test_a_pod_becomes_services_with_a_warning() -> None:
    pod = {
        "metadata": {"name": "api-0", "namespace": "shop"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "app",
                    "image": "shop/api:2",
                    "command": ["/app"],
                    "args": ["--port", "8080"],
                    "env": [
                        {"name": "MODE", "value": "prod"},
                        {"name": "CACHE_URL", "value": "redis://:s3cret@cache:6379/0"},
                        {"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    ],
                    "ports": [
                        {"containerPort": 8080, "hostPort": 80},
                        {"containerPort": 9090, "protocol": "UDP"},
                    ],
                },
                {"name": "proxy", "image": "envoy:1"},
            ],
        },
    }
    drafts = pod_services(pod)
    export = build(drafts, base="api-0", sanitize=True)
    services = yaml.safe_load(export.content)["services"]
    assert list(services) == ["api-0-app", "api-0-proxy"]
    app = services["api-0-app"]
    assert (app["image"], app["entrypoint"], app["command"]) == ("shop/api:2", ["/app"], ["--port", "8080"])
    assert app["environment"] == [
        "MODE=prod",
        "CACHE_URL=redis://:${CACHE_URL_PASSWORD}@cache:6379/0",
        "DB_URL=${DB_URL}",
    ]
    assert app["ports"] == ["80:8080", "9090/udp"] and app["restart"] == "always"
    assert export.env_content == "CACHE_URL_PASSWORD=your_cache_url_password_here\nDB_URL=your_db_url_here\n"
    assert any("converted from pod 'api-0'" in w for w in export.warnings)
    assert "Variable 'NODE' of 'api-0-app' comes from the cluster and was left out" in export.warnings
