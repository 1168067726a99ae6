"""The tests of operation store that need the private Docker Engine (docker tier); the story and the
other tests are in tests/unit/test_operation_store.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nekzus.operations.store import DB_FILE
from tests.support import ROOT


def test_serve_with_an_unusable_store_exits_2_naming_data_dir(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"garbage " * 512)
    env = {
        "PATH": "/usr/bin:/bin",
        "NEKZUS_SERVER__DATA_DIR": str(tmp_path),
        "NEKZUS_SERVER__TLS__MODE": "off",
        "NEKZUS_SERVER__PORT": "1",  # never bound: the store fails first
        "NEKZUS_RUNTIMES__DOCKER__HOST": f"unix://{tmp_path}/no-daemon.sock",
    }
    result = subprocess.run(
        [sys.executable, "-m", "nekzus", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "server.data_dir" in result.stderr and "Traceback" not in result.stderr
