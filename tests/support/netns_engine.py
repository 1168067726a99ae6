"""A private Docker Engine inside a network namespace of its own, for tests that create networks.

A bridge network makes the Engine create a Linux bridge (``br-…``) where dockerd runs; the shared
test daemon runs in the machine's own namespace, so tests that create networks use this one
instead: its bridges, veth pairs and addresses live and die with the namespace. Like the shared
one it runs without a default bridge and without iptables rules, and gets the busybox test image
from scripts/docker-sandbox.sh. Stopping it checks that the machine's namespace has no bridge the
tests left behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.docker_engine import SANDBOX

START_SECONDS = 60.0
STOP_SECONDS = 60.0


@dataclass(frozen=True)
class NetnsEngine:
    namespace: str
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


def root_bridges() -> set[str]:
    """The ``br-…`` interfaces (the Engine's bridge networks) of the machine's own namespace."""
    out = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
    names = (line.split(":")[1].strip().partition("@")[0] for line in out.splitlines() if ":" in line)
    return {name for name in names if name.startswith("br-")}


def _answers(path: Path) -> bool:
    """Whether an Engine answers ``/_ping`` on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(path))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return conn.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def _wait_until_up(engine: NetnsEngine) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not _answers(engine.socket):
        if engine.process.poll() is not None or time.monotonic() > deadline:
            log = (engine.directory / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dockerd in namespace {engine.namespace} did not start:\n{log}")
        time.sleep(0.1)  # dockerd says nothing when it is ready: its socket is asked again


def _stop(engine: NetnsEngine) -> None:
    """SIGTERM, a bounded wait (then SIGKILL), and the data root's leftover bind mount taken down
    (dockerd mounts its data root onto itself and may leave that mount behind)."""
    engine.process.terminate()
    try:
        engine.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait(timeout=STOP_SECONDS)
    root = engine.directory / "root"
    while subprocess.run(["mountpoint", "-q", str(root)], check=False).returncode == 0:
        subprocess.run(["umount", str(root)], check=True, capture_output=True)


@contextmanager
def netns_engine() -> Iterator[NetnsEngine]:
    """Starts dockerd in a new namespace ``nekzus-<run>``; stops it, deletes the namespace and its
    directory afterwards, then fails if the machine's namespace gained a bridge meanwhile."""
    before = root_bridges()
    namespace = f"nekzus-{uuid.uuid4().hex[:10]}"
    # A short directory: a unix socket's path has at most 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="nkz-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
    engine: NetnsEngine | None = None
    try:
        loopback_up = ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"]
        subprocess.run(loopback_up, check=True, capture_output=True)
        # nsenter enters the namespace's network only: `ip netns exec` would also mount a fresh
        # /sys, which hides the cgroup hierarchies mounted below it, and dockerd refuses to start.
        with open(directory / "dockerd.log", "wb") as log:
            process = subprocess.Popen(
                [
                    *("nsenter", f"--net=/run/netns/{namespace}", "dockerd"),
                    *("--host", f"unix://{directory}/docker.sock"),
                    *("--data-root", f"{directory}/root", "--exec-root", f"{directory}/exec"),
                    *("--pidfile", f"{directory}/docker.pid"),
                    *("--bridge=none", "--iptables=false", "--ip6tables=false"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_HOST": ""},
            )
        engine = NetnsEngine(namespace, directory, process)
        _wait_until_up(engine)
        subprocess.run(["bash", str(SANDBOX), "image", str(directory)], check=True, capture_output=True)
        yield engine
    finally:
        if engine is not None:
            _stop(engine)
        subprocess.run(["ip", "netns", "delete", namespace], check=True, capture_output=True)
        shutil.rmtree(directory)
    left = root_bridges() - before
    assert not left, f"bridges left in the machine's network namespace: {sorted(left)}"
