"""CPU, memory and network arithmetic on stats documents of both cgroup versions.

The v1 document was recorded from this project's test daemon (Docker 20.10, cgroup v1: a busy loop
after reading a 40 MB file, with a 256 MB limit). The v2 document has the shape Docker reports on
cgroup v2 hosts: no ``percpu_usage``, no ``cache`` or ``total_*`` memory counters.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtimes.stats import (
    CpuHistory,
    cpu_fraction,
    memory_used,
    network_totals,
    online_cpus,
    sample_from_docker,
)
from tests.support import DATA


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def test_cgroup_v1_recorded_document() -> None:
    doc = load("docker-stats-cgroup-v1.json")
    assert "percpu_usage" in doc["cpu_stats"]["cpu_usage"]
    sample = sample_from_docker("abc123def456", doc, 1_700_000_000)
    # Δcpu 795832728 ns over Δsystem 1860000000 ns on 2 online CPUs.
    expected = 795832728 / 1860000000 * 2
    assert sample.cores_used == pytest.approx(expected, abs=1e-4)
    assert sample.cpu_percent == pytest.approx(expected * 100, abs=0.01)
    assert sample.total_cores == 2.0
    # v1: usage minus total_inactive_file (0 here: the file was read twice, so it is active).
    assert sample.memory_used == 43982848
    assert sample.memory_limit == 268435456
    assert sample.memory_available == 268435456 - 43982848
    assert sample.memory_percent == pytest.approx(43982848 / 268435456 * 100, abs=0.01)
    assert (sample.network_rx, sample.network_tx) == (0, 0)
    assert sample.timestamp == 1_700_000_000


def test_cgroup_v2_document() -> None:
    doc = load("docker-stats-cgroup-v2.json")
    assert "percpu_usage" not in doc["cpu_stats"]["cpu_usage"]
    sample = sample_from_docker("5f3c1a9e2b7d", doc, 1)
    # Δcpu 1e9 ns over Δsystem 4e9 ns, times 4 online CPUs: one whole core.
    assert sample.cores_used == pytest.approx(1.0)
    assert sample.cpu_percent == pytest.approx(100.0)
    assert sample.total_cores == 4.0
    # v2: usage minus inactive_file.
    assert sample.memory_used == 536870912 - 104857600
    assert sample.memory_percent == pytest.approx(40.23, abs=0.01)
    assert sample.memory_available == 1073741824 - (536870912 - 104857600)
    assert (sample.network_rx, sample.network_tx) == (1048576 + 2048, 524288 + 1024)


def test_v1_without_total_inactive_file_falls_back_to_cache() -> None:
    stats = {"usage": 1000, "stats": {"cache": 300, "inactive_file": 100}}
    assert memory_used(stats) == 700


def test_memory_never_goes_negative() -> None:
    assert memory_used({"usage": 100, "stats": {"total_inactive_file": 500}}) == 100
    assert memory_used({}) == 0


def test_online_cpus_fallback_to_percpu_length() -> None:
    assert online_cpus({"cpu_usage": {"percpu_usage": [1, 2, 3]}}) == 3
    assert online_cpus({"online_cpus": 8, "cpu_usage": {"percpu_usage": [1]}}) == 8
    assert online_cpus({}) == 1


def test_first_sample_without_precpu_is_zero_not_lifetime_average() -> None:
    doc = load("docker-stats-cgroup-v1.json")
    doc["precpu_stats"] = {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
    cores, cpus = cpu_fraction(doc)
    assert cores == 0.0 and cpus == 2


def test_stopped_container_document_is_all_zero() -> None:
    doc = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}
    sample = sample_from_docker("abc", doc, 5)
    assert (sample.cpu_percent, sample.memory_used, sample.memory_percent, sample.memory_available) == (
        0,
        0,
        0,
        0,
    )


def test_network_sums_every_interface() -> None:
    doc = {"networks": {"a": {"rx_bytes": 1, "tx_bytes": 2}, "b": {"rx_bytes": 10, "tx_bytes": 20}}}
    assert network_totals(doc) == (11, 22)


def test_online_cpus_of_a_container_that_never_ran_are_the_daemons() -> None:
    assert online_cpus({}, 6) == 6
    assert online_cpus({"cpu_usage": {"total_usage": 0}}, 0) == 1
    assert online_cpus({"online_cpus": 2}, 6) == 2  # the container's own figure wins


def test_never_started_container_reports_the_daemons_cores() -> None:
    doc = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}
    assert sample_from_docker("abc", doc, 5, cpus=4).total_cores == 4.0
    recorded = load("docker-stats-cgroup-v1.json")
    assert sample_from_docker("abc", recorded, 5, cpus=4).total_cores == 2.0


def cpu(total: int, system: int) -> dict[str, Any]:
    return {
        "cpu_usage": {"total_usage": total, "percpu_usage": [total]},
        "system_cpu_usage": system,
        "online_cpus": 2,
    }


def test_history_gives_a_rate_against_the_previous_sample() -> None:
    history = CpuHistory(min_gap=0.25, max_age=30)
    assert history.earlier("c", 100.0) is None
    history.record("c", 100.0, cpu(1_000, 10_000))
    assert history.earlier("c", 100.1) is None  # too close: a rate over 0.1 s is mostly noise
    earlier = history.earlier("c", 100.5)
    assert earlier == {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000}
    # The arithmetic is the Engine's own with the earlier reading as precpu_stats.
    cores, cpus = cpu_fraction({"cpu_stats": cpu(2_000, 14_000), "precpu_stats": earlier})
    assert (cores, cpus) == pytest.approx((1_000 / 4_000 * 2, 2))
    assert history.earlier("other", 100.5) is None


def test_history_keeps_the_window_at_least_min_gap_for_quick_calls() -> None:
    history = CpuHistory(min_gap=0.25, max_age=30)
    history.record("c", 100.0, cpu(1, 10))
    history.record("c", 100.3, cpu(2, 20))
    # A call 0.1 s after the newest compares with the one before it, 0.4 s back.
    assert history.earlier("c", 100.4) == {"cpu_usage": {"total_usage": 1}, "system_cpu_usage": 10}
    history.record("c", 100.4, cpu(3, 30))  # too close to keep: the two readings stay
    assert history.earlier("c", 100.45) == {"cpu_usage": {"total_usage": 1}, "system_cpu_usage": 10}
    assert history.earlier("c", 100.6) == {"cpu_usage": {"total_usage": 2}, "system_cpu_usage": 20}
    history.record("c", 100.6, cpu(4, 40))
    assert history.earlier("c", 100.9) == {"cpu_usage": {"total_usage": 4}, "system_cpu_usage": 40}


def test_history_forgets_old_samples() -> None:
    history = CpuHistory(min_gap=0.25, max_age=30)
    history.record("old", 100.0, cpu(1, 10))
    assert history.earlier("old", 131.0) is None
    history.record("new", 140.0, cpu(1, 10))  # a later record sweeps what has gone stale
    assert len(history) == 1
