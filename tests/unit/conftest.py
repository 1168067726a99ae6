"""The unit tier: no daemon, no network beyond the in-process test server, no server processes.

The runtimes here are fakes passed to ``create_app``; the Docker host the configuration names is
one nothing listens on, so a test that reached for a real daemon fails here instead of quietly
needing one.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"unix://{tmp_path_factory.mktemp('no-daemon')}/docker.sock"
