"""The tests of server that need the private Docker Engine (docker tier); the story and the other tests
are in tests/unit/test_server.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support import ROOT
from tests.support.gateway import read_until
from tests.unit.test_config_cli import run_cli
from tests.unit.test_tls_cli import env_for, free_port


def test_serve_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real command: it logs where it listens, answers, and exits 0 on SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nekzus", "serve"],
        cwd=ROOT,
        env=env_for(tmp_path, port, NEKZUS_SERVER__TLS__MODE="off"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_until(process.stderr, f"Running on http://127.0.0.1:{port}", "the gateway")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        process.terminate()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", env=env_for(tmp_path, port, NEKZUS_SERVER__TLS__MODE="off"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.splitlines()[-1] == f"nekzus: cannot listen on 127.0.0.1:{port}: address already in use"
    )
