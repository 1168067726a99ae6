"""A silent pod watch, a frozen path to the apiserver and a dead etcd: noticed, bounded, recovered.

The real tier puts a loopback TCP proxy between the gateway and the apiserver that can freeze
(keep every connection open and forward nothing), and stops etcd under a running apiserver, which
still answers /version from memory. The fast tier covers what the fake apiserver can show on cue.
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
