"""A local image registry for pull and update tests: no internet, nothing shared with other runs.

Debian's ``docker-registry`` serves on a free loopback port with its storage in pytest's temporary
directory (the Engine treats 127.0.0.0/8 registries as insecure, so plain HTTP works without
configuring the daemon). The session's registry holds the test image as ``nekzus/busybox:1``;
:meth:`LocalRegistry.push_changed` pushes an image with other content (so another digest) under
any reference, for tests of an update that finds a new image. Images go in and out through the
docker CLI on the test Engine, as scripts/docker-sandbox.sh builds the test image.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from io import BytesIO
from pathlib import Path

import pytest

from tests.support.docker_engine import TEST_IMAGE

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_SECONDS = 20.0
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalRegistry:
    """A running ``docker-registry`` on 127.0.0.1, and the Engine (``docker_host``) that uses it."""

    def __init__(self, directory: Path, docker_host: str) -> None:
        self.directory = directory
        self.docker_host = docker_host
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = directory / "registry.log"

    def reference(self, repository: str, tag: str) -> str:
        """``repository:tag`` on this registry, e.g. ``127.0.0.1:5000/nekzus/busybox:1``."""
        return f"{self.address}/{repository}:{tag}"

    @property
    def busybox(self) -> str:
        """The test image as the session pushed it: ``127.0.0.1:PORT/nekzus/busybox:1``."""
        return self.reference("nekzus/busybox", "1")

    def start(self) -> None:
        binary = shutil.which("docker-registry") or REGISTRY_BINARY
        if not Path(binary).exists():
            raise RuntimeError("docker-registry is missing: apt-get install docker-registry")
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.directory / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
        )
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        """Poll ``GET /v2/`` until it answers, the process dies, or the deadline passes."""
        deadline = time.monotonic() + START_SECONDS
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer within {START_SECONDS:.0f} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        """Run the docker CLI on the test Engine; answer its output."""
        done = subprocess.run(
            ["docker", "-H", self.docker_host, *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def push(self, source: str, reference: str) -> str:
        """Push the Engine's image ``source`` as ``reference`` and drop that local tag again, so
        the Engine only has it by pulling; answer the digest the registry gave it."""
        self.docker("tag", source, reference)
        try:
            output = self.docker("push", reference)
        finally:
            self.remove_local(reference)
        found = _PUSHED_DIGEST.search(output)
        if found is None:
            raise RuntimeError(f"docker push {reference} told no digest: {output}")
        return found.group(1)

    def push_changed(self, reference: str, *, labels: Mapping[str, str] | None = None) -> str:
        """Push under ``reference`` the test image plus one file of its own (and ``labels``), so
        its content and digest differ from every earlier push; the changed image is not left on
        the Engine. Answer its digest."""
        scratch = f"{self.address}/nekzus/scratch:{uuid.uuid4().hex[:12]}"
        self.import_changed(scratch, labels=labels)
        try:
            return self.push(scratch, reference)
        finally:
            self.remove_local(scratch)

    def import_changed(self, reference: str, *, labels: Mapping[str, str] | None = None) -> str:
        """Make on the Engine, as ``reference``, the test image plus one file of its own (so an
        image no other has the layer of), with ``labels``; answer its id. The caller removes it."""
        container = self.docker("create", "--network", "none", TEST_IMAGE, "true").strip()
        try:
            tree = self.docker_bytes("export", container)
        finally:
            self.docker("rm", "-f", container)
        changes = ["-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin"]
        for key, value in (labels or {}).items():
            changes += ["-c", f"LABEL {key}={value}"]
        return self.docker("import", *changes, "-", reference, stdin=_with_marker(tree)).strip()

    def docker_bytes(self, *args: str) -> bytes:
        done = subprocess.run(
            ["docker", "-H", self.docker_host, *args], capture_output=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout

    def remove_local(self, *references: str) -> None:
        """Remove these tags (and the images only they named) from the Engine, if it has them."""
        for reference in references:
            done = subprocess.run(
                ["docker", "-H", self.docker_host, "rmi", reference],
                capture_output=True,
                check=False,
                timeout=60,
            )
            if done.returncode != 0 and b"No such image" not in done.stderr:
                raise RuntimeError(f"docker rmi {reference} failed: {done.stderr.decode(errors='replace')}")


def _with_marker(tree: bytes) -> bytes:
    """A filesystem tar with one more file, ``/nekzus-build``, whose content is new every time."""
    buffer = BytesIO(tree)
    with tarfile.open(fileobj=buffer, mode="a") as archive:
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("nekzus-build")
        info.size = len(marker)
        archive.addfile(info, BytesIO(marker))
    return buffer.getvalue()


@pytest.fixture(scope="session")
def registry(docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """The session's registry, holding the test image as :attr:`LocalRegistry.busybox`."""
    started = LocalRegistry(tmp_path_factory.mktemp("registry"), docker_host)
    started.start()
    try:
        started.push(TEST_IMAGE, started.busybox)
        yield started
    finally:
        started.stop()
