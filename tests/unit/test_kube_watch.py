"""The tests of kube watch that need no daemon (unit tier); the story and the other tests are in
tests/kube_fake/test_kube_watch.py, tests/kube_real/test_kube_watch.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.kube_fake.test_kube_fast import kube_config


@pytest.mark.parametrize(
    ("key", "value"), [("watch_timeout", 1), ("request_timeout", 0), ("request_timeout", 301)]
)
def test_watch_and_request_timeouts_are_checked_in_the_config(tmp_path: Path, key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=rf"runtimes\.kubernetes\.{key}"):
        kube_config(tmp_path / "kubeconfig", **{key: value})
