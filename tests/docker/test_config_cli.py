"""The tests of config cli that need the private Docker Engine (docker tier); the story and the other
tests are in tests/unit/test_config_cli.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_config_cli import run_cli, write


def test_cli_exits_2_naming_the_bad_key(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(write(tmp_path, "server: {port: -1}\n")))
    assert result.returncode == 2
    assert "server.port" in result.stderr
    result = run_cli("serve", env={"NEKZUS_RUNTIMES__PRIMARY": "lxc"})
    assert result.returncode == 2
    assert "runtimes.primary" in result.stderr


def test_cli_version_and_usage() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("nekzus ")
    assert run_cli().returncode == 2
