"""CPU, memory and network arithmetic on stats documents of both cgroup versions.

The v1 document was recorded from this project's test daemon (Docker 20.10, cgroup v1: a busy loop
after reading a 40 MB file, with a 256 MB limit). The v2 document has the shape Docker reports on
cgroup v2 hosts: no ``percpu_usage``, no ``cache`` or ``total_*`` memory counters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtimes.stats import cpu_fraction, memory_used, network_totals, online_cpus, sample_from_docker

DATA = Path(__file__).parent / "data"


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
