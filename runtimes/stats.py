"""Reduce a Docker Engine stats document to the contract's CPU, memory and network figures.

The arithmetic follows the Docker CLI so the numbers agree with ``docker stats``, and it is correct
on both cgroup versions: cgroup v1 reports ``percpu_usage`` and ``total_*`` memory counters,
cgroup v2 reports neither and must be read through ``online_cpus`` and ``inactive_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import StatsSample


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def online_cpus(cpu_stats: Mapping[str, Any], fallback: int = 1) -> int:
    """CPUs the container may use: ``online_cpus``, else the length of ``percpu_usage`` (old v1),
    else ``fallback`` (the daemon's CPU count: a container that never ran reports neither)."""
    online = _int(cpu_stats.get("online_cpus"))
    if online > 0:
        return online
    percpu = cpu_stats.get("cpu_usage", {}).get("percpu_usage") or []
    return len(percpu) if percpu else max(fallback, 1)


def cpu_fraction(doc: Mapping[str, Any], cpus_fallback: int = 1) -> tuple[float, int]:
    """(cores in use, online CPUs) between ``precpu_stats`` and ``cpu_stats``.

    CPU % = Δcontainer CPU ÷ Δsystem CPU × online CPUs × 100; ``cores in use`` is that ÷ 100.
    """
    cpu = doc.get("cpu_stats") or {}
    pre = doc.get("precpu_stats") or {}
    cpus = online_cpus(cpu, cpus_fallback)
    cpu_delta = _int(cpu.get("cpu_usage", {}).get("total_usage")) - _int(
        pre.get("cpu_usage", {}).get("total_usage")
    )
    system_delta = _int(cpu.get("system_cpu_usage")) - _int(pre.get("system_cpu_usage"))
    # An empty precpu_stats (first sample) or a counter reset gives no meaningful delta.
    if cpu_delta <= 0 or system_delta <= 0 or not _int(pre.get("system_cpu_usage")):
        return 0.0, cpus
    return cpu_delta / system_delta * cpus, cpus


def memory_used(memory_stats: Mapping[str, Any]) -> int:
    """Bytes in use without the page cache, which the kernel can reclaim at any time.

    cgroup v1: ``usage - total_inactive_file`` (else ``usage - cache``);
    cgroup v2: ``usage - inactive_file``.
    """
    usage = _int(memory_stats.get("usage"))
    detail = memory_stats.get("stats") or {}
    if "total_inactive_file" in detail:
        cache = _int(detail["total_inactive_file"])
    elif "cache" in detail:
        cache = _int(detail["cache"])
    else:
        cache = _int(detail.get("inactive_file"))
    return usage - cache if cache < usage else usage


def network_totals(doc: Mapping[str, Any]) -> tuple[int, int]:
    """Bytes received and sent, summed over every interface."""
    rx = tx = 0
    for iface in (doc.get("networks") or {}).values():
        rx += _int(iface.get("rx_bytes"))
        tx += _int(iface.get("tx_bytes"))
    return rx, tx


def sample_from_docker(
    container_id: str, doc: Mapping[str, Any], timestamp: int, *, cpus: int = 1
) -> StatsSample:
    """The contract's figures; ``cpus`` is the daemon's CPU count, for a document without its own."""
    cores, cpus = cpu_fraction(doc, cpus)
    memory = doc.get("memory_stats") or {}
    used = memory_used(memory)
    limit = _int(memory.get("limit"))
    rx, tx = network_totals(doc)
    return StatsSample(
        container_id=container_id,
        cpu_percent=round(cores * 100, 2),
        cores_used=round(cores, 4),
        total_cores=float(cpus),
        memory_percent=round(used / limit * 100, 2) if limit > 0 else 0.0,
        memory_used=used,
        memory_limit=limit,
        memory_available=max(limit - used, 0),
        network_rx=rx,
        network_tx=tx,
        timestamp=timestamp,
    )


class CpuHistory:
    """The CPU counters of each container's recent samples, so that a one-shot sample (which has
    no previous reading) still gives a rate: against the newest earlier sample that is at least
    ``min_gap`` seconds old, and no older than ``max_age``.

    Two readings are kept per container: a new one replaces the older only once the newer is
    ``min_gap`` old, so calls in quick succession still measure over at least ``min_gap``.
    """

    def __init__(self, *, min_gap: float, max_age: float = 30.0) -> None:
        self.min_gap = min_gap
        self.max_age = max_age
        self._readings: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self._swept = 0.0

    def earlier(self, key: str, now: float) -> dict[str, Any] | None:
        """The reading to compare a sample taken at ``now`` with, None without a usable one."""
        for taken, cpu in reversed(self._readings.get(key, ())):
            age = now - taken
            if self.min_gap <= age <= self.max_age:
                return dict(cpu)
        return None

    def record(self, key: str, now: float, cpu_stats: Mapping[str, Any]) -> None:
        """Keep the counters of a sample taken at ``now`` (a monotonic clock)."""
        if now - self._swept > self.max_age:
            self._swept = now
            for stale in [k for k, v in self._readings.items() if now - v[-1][0] > self.max_age]:
                del self._readings[stale]
        reading = (
            now,
            {
                "cpu_usage": {"total_usage": _int(cpu_stats.get("cpu_usage", {}).get("total_usage"))},
                "system_cpu_usage": _int(cpu_stats.get("system_cpu_usage")),
            },
        )
        kept = self._readings.setdefault(key, [])
        if kept and now - kept[-1][0] < self.min_gap:
            return
        kept.append(reading)
        del kept[:-2]

    def __len__(self) -> int:
        return len(self._readings)
