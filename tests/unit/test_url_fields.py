"""Every value a client chooses that reaches a runtime's URL, walked with hostile values.

Path ids, namespaces (query and path form), batch and export ids, and the log subscription's
``containerId``, ``namespace`` and ``container`` go to both runtimes with ``../``, ``/``, ``?``,
``#``, ``%2F``, ``%00``, NUL, newlines, spaces, 300 characters and non-ASCII text. Each is refused
with a 4xx envelope (or INVALID_MESSAGE over the WebSocket), and what the fake apiserver and the
Docker Engine (behind a recording proxy) received is checked: every path has the expected shape.
Below that, the runtimes' own URL building is checked with values that skipped validation: both
daemons decode ``%2F`` before routing, so besides percent-encoding each segment the runtimes send
nothing their daemon could not hold as a name.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import pytest
from yarl import URL

from runtimes import NotFound
from runtimes import kubeobjects as ko
from runtimes.docker.paths import container_path
from runtimes.kubernetes.paths import pod_path, workload_path
from runtimes.urlpath import segment
from tests.kube_fake.test_kube_fast import NS
from tests.kube_fake.test_url_fields import HOSTILE


@pytest.mark.parametrize("value", [v for v in HOSTILE if v not in (".", "..")])
def test_a_percent_encoded_segment_stays_one_segment(value: str) -> None:
    """As aiohttp reads the URL string it is given: one segment, no query, no fragment, and the
    value itself once the server decodes it."""
    url = URL(f"http://127.0.0.1/containers/{segment(value)}/json")
    assert url.raw_query_string == "" and url.raw_fragment == ""
    assert [unquote(part) for part in url.raw_path.split("/")[1:]] == ["containers", value, "json"]


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_empty_and_dot_segments_name_nothing(value: str) -> None:
    """A URL library folds dot segments away, leaving the path one level up: never sent."""
    with pytest.raises(NotFound):
        segment(value)


@pytest.mark.parametrize("value", HOSTILE)
def test_path_builders_send_only_names_their_daemon_could_hold(value: str) -> None:
    """Both daemons decode the path before routing it: ``%2F`` would still be a slash to them."""
    builders: list[Callable[[], str]] = [
        lambda: container_path(value, "json"),
        lambda: pod_path(value, "web"),
        lambda: pod_path(NS, value),
        lambda: workload_path("deployment", value, "web"),
        lambda: workload_path("deployment", NS, value),
    ]
    for build in builders[1:] if value == "x" * 300 else builders:  # a valid Docker name, too long for a pod
        with pytest.raises(NotFound):
            build()


NAME_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


@pytest.mark.parametrize(
    ("value", "label", "name", "object_id"),
    [
        ("web", True, True, True),
        ("a" * 63, True, True, True),
        ("a" * 64, False, True, True),  # a label is at most 63 characters, a subdomain's labels too
        ("web.v1", False, True, True),
        (NAME_253, False, True, True),
        (NAME_253 + "d", False, False, False),
        ("deployment/" + NAME_253, False, False, True),
        ("statefulset/db-0", False, False, True),
        ("daemonset/agent", False, False, False),  # not a workload the gateway can stop and start
        ("Web", False, False, False),
        ("-web", False, False, False),
        ("web-", False, False, False),
        ("a..b", False, False, False),
        ("web\n", False, False, False),
        ("", False, False, False),
    ],
)
def test_kubernetes_name_rules(value: str, label: bool, name: bool, object_id: bool) -> None:
    assert (ko.is_label(value), ko.is_object_name(value), ko.is_object_id(value)) == (label, name, object_id)
