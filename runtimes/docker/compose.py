"""A Docker container as a compose service: only what differs from its image and Docker's defaults.

The rule for every key is the same: would ``docker compose up`` without it create the same
container? Then it is left out. So the command is compared with the image's, the environment
and labels lose what the image sets, capabilities are compared with Docker's default set, and the
hostname Docker made from the id, ``ipc: private``, the default logging driver and empty blocks
never appear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..compose import ServiceDraft

# The capabilities Docker gives every container (moby's oci/caps/defaults.go).
DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
DEFAULT_SHM_SIZE = 64 << 20
_ALL_INTERFACES = {"", "0.0.0.0", "::"}
_DEFAULT_NETWORKS = {"", "default", "bridge"}
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def _cap(name: str) -> str:
    upper = name.upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def duration(nanoseconds: int) -> str:
    """A compose duration ("30s", "1500ms") of a Docker nanosecond count."""
    for unit, size in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if nanoseconds % size == 0:
            return f"{nanoseconds // size}{unit}"
    return f"{nanoseconds}ns"


def _ports(host: Mapping[str, Any]) -> list[str]:
    ports = []
    bindings = host.get("PortBindings") or {}
    for key in sorted(bindings, key=lambda k: (int(k.partition("/")[0]), k)):
        private, _, proto = key.partition("/")
        suffix = "" if proto in ("", "tcp") else f"/{proto}"
        for binding in bindings[key] or [{}]:
            ip = str(binding.get("HostIp") or "")
            public = str(binding.get("HostPort") or "")
            if not public:
                ports.append(f"{private}{suffix}")  # a random host port, as -p 80 asked
                continue
            prefix = "" if ip in _ALL_INTERFACES else (f"[{ip}]:" if ":" in ip else f"{ip}:")
            ports.append(f"{prefix}{public}:{private}{suffix}")
    return ports


def _healthcheck(own: Mapping[str, Any] | None, image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not own or own == image:
        return None
    test = list(own.get("Test") or [])
    if test == ["NONE"]:
        return {"disable": True}
    check: dict[str, Any] = {"test": test} if test else {}
    for key, name in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                      ("StartInterval", "start_interval")):  # fmt: skip
        if own.get(key):
            check[name] = duration(int(own[key]))
    if own.get("Retries"):
        check["retries"] = int(own["Retries"])
    return check or None


def _mounts(doc: Mapping[str, Any], image_volumes: Mapping[str, Any], draft: ServiceDraft) -> None:
    """``-v``/``--mount`` binds and volumes as short syntax; named volumes also go top level."""
    host = doc.get("HostConfig") or {}
    covered: set[str] = set()
    for bind in host.get("Binds") or ():
        # -v as the user wrote it: "src:dst[:opts]"; a source without a slash is a named volume.
        parts = str(bind).split(":")
        if len(parts) < 2:
            continue
        source, target = parts[0], parts[1]
        covered.add(target)
        draft.volumes_used.append(str(bind))
        if source and not source.startswith(("/", ".", "~")):
            draft.named_volumes.setdefault(source, {})
    for mount in host.get("Mounts") or ():
        kind, target = mount.get("Type"), str(mount.get("Target", ""))
        covered.add(target)
        if kind == "tmpfs":
            draft.body.setdefault("tmpfs", []).append(target)
            continue
        source = str(mount.get("Source", ""))
        entry = f"{source}:{target}" if source else target
        draft.volumes_used.append(entry + (":ro" if mount.get("ReadOnly") else ""))
        if kind == "volume" and source:
            driver = ((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")
            draft.named_volumes.setdefault(source, {"driver": driver} if driver and driver != "local" else {})
    # Anonymous volumes the container asked for beyond the image's own VOLUMEs.
    for target in (doc.get("Config") or {}).get("Volumes") or {}:
        if target not in covered and target not in image_volumes:
            draft.volumes_used.append(target)
    for mount in doc.get("Mounts") or ():
        driver = mount.get("Driver")
        name = mount.get("Name")
        if mount.get("Type") == "volume" and name in draft.named_volumes and driver and driver != "local":
            draft.named_volumes[name] = {"driver": driver}
            draft.warnings.append(f"Volume '{name}' uses driver '{driver}': check its options")


def _networking(doc: Mapping[str, Any], draft: ServiceDraft, include_networks: bool) -> None:
    host = doc.get("HostConfig") or {}
    mode = str(host.get("NetworkMode") or "")
    if mode in ("none", "host"):
        draft.body["network_mode"] = mode
        return
    if mode.startswith("container:"):
        draft.body["network_mode"] = mode
        draft.warnings.append(
            f"Container '{draft.name}' shares the network of {mode}: point it at its service"
        )
        return
    if not include_networks:
        return
    attached = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    user_networks = [n for n in attached if n not in _DEFAULT_NETWORKS]
    if mode not in _DEFAULT_NETWORKS and mode not in user_networks:
        user_networks.insert(0, mode)
    if not user_networks:
        return
    service_networks: dict[str, Any] = {}
    short_id = str(doc.get("Id", ""))[:12]
    for name in user_networks:
        settings = attached.get(name) or {}
        options: dict[str, Any] = {}
        aliases = [a for a in settings.get("Aliases") or () if a not in (short_id, draft.name)]
        if aliases:
            options["aliases"] = aliases
        ipam = settings.get("IPAMConfig") or {}
        if ipam.get("IPv4Address"):
            options["ipv4_address"] = ipam["IPv4Address"]
        if ipam.get("IPv6Address"):
            options["ipv6_address"] = ipam["IPv6Address"]
        service_networks[name] = options or None
        # The network exists already: the export joins it rather than making a project's own.
        draft.named_networks[name] = {"name": name, "external": True}
    if all(v is None for v in service_networks.values()):
        draft.body["networks"] = list(service_networks)
    else:
        draft.body["networks"] = {k: v or {} for k, v in service_networks.items()}


def container_name(doc: Mapping[str, Any]) -> str:
    """The container's name without Docker's leading slash (its short id if it has none): the
    service's name and the export's file name."""
    return str(doc.get("Name", "")).lstrip("/") or str(doc.get("Id", ""))[:12]


def docker_service(
    doc: Mapping[str, Any],
    image: Mapping[str, Any],
    log_driver: str,
    *,
    include_volumes: bool = True,
    include_networks: bool = True,
) -> ServiceDraft:
    config = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    image_config = image.get("Config") or {}
    name = container_name(doc)
    draft = ServiceDraft(name=name)
    body = draft.body
    body["image"] = config.get("Image", "")
    if _HEX_ID.fullmatch(str(body["image"]).removeprefix("sha256:")):
        draft.warnings.append(f"Container '{name}' was made from an image id, not a name: tag the image")
    body["container_name"] = name

    entrypoint, command = config.get("Entrypoint"), config.get("Cmd")
    if (entrypoint or None) != (image_config.get("Entrypoint") or None):
        # A new entrypoint clears the image's command, so the container's own is kept with it.
        body["entrypoint"] = list(entrypoint or [])
        if command:
            body["command"] = list(command)
    elif (command or None) != (image_config.get("Cmd") or None) and command:
        body["command"] = list(command)

    inherited = set(image_config.get("Env") or ())
    for entry in config.get("Env") or ():
        if entry not in inherited:
            key, _, value = str(entry).partition("=")
            draft.environment.append((key, value))

    ports = _ports(host)
    if ports:
        body["ports"] = ports
    published = {
        k.partition("/")[0] + "/" + (k.partition("/")[2] or "tcp") for k in host.get("PortBindings") or {}
    }
    exposed = [
        k
        for k in config.get("ExposedPorts") or {}
        if k not in (image_config.get("ExposedPorts") or {}) and k not in published
    ]
    if exposed:
        body["expose"] = [k.removesuffix("/tcp") for k in exposed]

    if include_volumes:
        _mounts(doc, image_config.get("Volumes") or {}, draft)
        if draft.volumes_used:
            body["volumes"] = draft.volumes_used
    elif host.get("Binds") or host.get("Mounts"):
        draft.warnings.append(f"Volumes of '{name}' were left out (include_volumes is false)")
    for target, options in (host.get("Tmpfs") or {}).items():
        body.setdefault("tmpfs", []).append(f"{target}:{options}" if options else target)

    _networking(doc, draft, include_networks)

    policy = host.get("RestartPolicy") or {}
    restart = str(policy.get("Name") or "")
    if restart and restart != "no":
        retries = int(policy.get("MaximumRetryCount") or 0)
        body["restart"] = f"{restart}:{retries}" if restart == "on-failure" and retries else restart

    image_labels = image_config.get("Labels") or {}
    labels = {
        k: v
        for k, v in (config.get("Labels") or {}).items()
        if not k.startswith("com.docker.compose.") and image_labels.get(k) != v
    }
    if labels:
        body["labels"] = labels

    health = _healthcheck(config.get("Healthcheck"), image_config.get("Healthcheck"))
    if health:
        body["healthcheck"] = health
    for key, field in (("User", "user"), ("WorkingDir", "working_dir")):
        if config.get(key) and config.get(key) != image_config.get(key):
            body[field] = config[key]
    if config.get("StopSignal") and config.get("StopSignal") != image_config.get("StopSignal"):
        body["stop_signal"] = config["StopSignal"]
    if config.get("StopTimeout") is not None:
        body["stop_grace_period"] = f"{int(config['StopTimeout'])}s"
    network_mode = str(host.get("NetworkMode") or "")
    hostname = str(config.get("Hostname") or "")
    if (
        hostname
        and hostname != str(doc.get("Id", ""))[:12]
        and network_mode not in ("host",)
        and not network_mode.startswith("container:")
    ):
        body["hostname"] = hostname
    if config.get("Domainname"):
        body["domainname"] = config["Domainname"]
    if config.get("Tty"):
        body["tty"] = True
    if config.get("OpenStdin"):
        body["stdin_open"] = True

    cap_add = sorted({_cap(c) for c in host.get("CapAdd") or ()} - DEFAULT_CAPS)
    cap_drop = sorted(
        c for c in {_cap(c) for c in host.get("CapDrop") or ()} if c in DEFAULT_CAPS or c == "ALL"
    )
    if cap_add:
        body["cap_add"] = cap_add
    if cap_drop:
        body["cap_drop"] = cap_drop
    if host.get("Privileged"):
        body["privileged"] = True
        draft.warnings.append(f"Container '{name}' runs privileged: it has full access to the host")
    devices = [
        ":".join([d["PathOnHost"], d.get("PathInContainer") or d["PathOnHost"]]
                 + ([d["CgroupPermissions"]] if d.get("CgroupPermissions", "rwm") != "rwm" else []))
        for d in host.get("Devices") or ()
    ]  # fmt: skip
    if devices:
        body["devices"] = devices
    if host.get("ExtraHosts"):
        body["extra_hosts"] = list(host["ExtraHosts"])

    _host_options(host, body)
    logging = host.get("LogConfig") or {}
    driver = str(logging.get("Type") or "")
    if (driver and driver != log_driver) or logging.get("Config"):
        body["logging"] = {
            "driver": driver,
            **({"options": dict(logging["Config"])} if logging.get("Config") else {}),
        }
    return draft


def _host_options(host: Mapping[str, Any], body: dict[str, Any]) -> None:
    """Resource limits and kernel settings that differ from Docker's defaults."""
    if host.get("Init"):
        body["init"] = True
    if host.get("ReadonlyRootfs"):
        body["read_only"] = True
    if host.get("Memory"):
        body["mem_limit"] = int(host["Memory"])
    if host.get("NanoCpus"):
        body["cpus"] = int(host["NanoCpus"]) / 1e9
    if host.get("PidsLimit") and int(host["PidsLimit"]) > 0:
        body["pids_limit"] = int(host["PidsLimit"])
    if host.get("ShmSize") and int(host["ShmSize"]) != DEFAULT_SHM_SIZE:
        body["shm_size"] = int(host["ShmSize"])
    ipc = str(host.get("IpcMode") or "")
    if ipc and ipc not in ("private", "shareable"):
        body["ipc"] = ipc
    if host.get("PidMode"):
        body["pid"] = host["PidMode"]
    for key, field in (("SecurityOpt", "security_opt"), ("Dns", "dns"), ("DnsSearch", "dns_search"),
                       ("DnsOptions", "dns_opt"), ("GroupAdd", "group_add")):  # fmt: skip
        if host.get(key):
            body[field] = list(host[key])
    if host.get("Sysctls"):
        body["sysctls"] = dict(host["Sysctls"])
    limits = {
        u["Name"]: (
            u["Soft"] if u.get("Soft") == u.get("Hard") else {"soft": u.get("Soft"), "hard": u.get("Hard")}
        )
        for u in host.get("Ulimits") or ()
    }
    if limits:
        body["ulimits"] = limits
