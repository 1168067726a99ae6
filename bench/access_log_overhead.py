"""What the access log costs: the same requests to a gateway with it on and one with it off.

Two gateways side by side on the same daemon, same settings and TLS, one with
``NEKZUS_LOGGING__ACCESS_LOG=false``; both write their log to a file, as in production. Calls
alternate between the two, the order swapping every round, so machine noise hits both alike.
Measured on ``/healthz`` (the cheapest route, where the log line is the largest share of the work)
and on ``GET /api/v1/containers`` with 20 linked containers. The gateways' CPU time per request
(from /proc, over many calls so the clock tick does not matter) is steadier than latency on a busy
machine, and what the log line adds scales with the machine's load like the rest of the request,
so the target is a share: the access log adds ≤ 40 % to the CPU of a ``/healthz`` request, the
cheapest there is (a record costs about 25 µs on an idle core).
"""

from __future__ import annotations

from bench._harness import (
    Bench,
    Gateway,
    Row,
    another_gateway,
    cpu_seconds,
    ms,
    percentile,
    run_script,
    timed_get,
)

CONTAINERS = 20
WARMUP = 30
TARGET_CPU_SHARE = 40.0  # percent
ROUTES = {"/healthz": 3000, "/api/v1/containers": 300}  # calls per gateway


async def _compare(
    on: Gateway, off: Gateway, path: str, calls: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latency samples and CPU seconds per request of both gateways on ``path``."""
    samples: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, float] = {}
    pids = {"on": on.pid, "off": off.pid}
    async with on.session() as a, off.session() as b:
        sessions = {"on": a, "off": b}
        for i in range(WARMUP + calls):
            if i == WARMUP:
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for name in ("on", "off") if i % 2 else ("off", "on"):
                took, _, _ = await timed_get(sessions[name], path)
                if i >= WARMUP:
                    samples[name].append(took)
    return samples, {name: (cpu_seconds(pid) - cpu[name]) / calls for name, pid in pids.items()}


async def measure(bench: Bench) -> list[Row]:
    await bench.engine.create_many(CONTAINERS, "bench-access", labels={"nekzus.enable": "true"})
    rows: list[Row] = []
    async with (
        another_gateway(bench, {"NEKZUS_LOGGING__ACCESS_LOG": "true"}) as on,
        another_gateway(bench, {"NEKZUS_LOGGING__ACCESS_LOG": "false"}) as off,
    ):
        for path, calls in ROUTES.items():
            samples, cpu = await _compare(on, off, path, calls)
            on50, off50 = percentile(samples["on"], 50), percentile(samples["off"], 50)
            target = TARGET_CPU_SHARE if path == "/healthz" else None
            rows += [
                Row(f"{path}: median without the access log ({calls} calls)", ms(off50), "ms"),
                Row(f"{path}: median with the access log", ms(on50), "ms"),
                Row(f"{path}: p90 without", ms(percentile(samples["off"], 90)), "ms"),
                Row(f"{path}: p90 with", ms(percentile(samples["on"], 90)), "ms"),
                Row(f"{path}: gateway CPU per request without", ms(cpu["off"]), "ms"),
                Row(f"{path}: gateway CPU per request with", ms(cpu["on"]), "ms"),
                Row(f"{path}: median with / without", on50 / off50, "×"),
                Row(f"{path}: CPU the access log adds per request", ms(cpu["on"] - cpu["off"]), "ms"),
                Row(f"{path}: CPU added, share", (cpu["on"] / cpu["off"] - 1) * 100, "%", target),
            ]
        lines = sum(1 for line in on.log_path.read_text().splitlines() if "nekzus.access" in line)
        off_lines = sum(1 for line in off.log_path.read_text().splitlines() if "nekzus.access" in line)
    # Checks that the comparison is the one meant: every request logged on one side, none on the other.
    requests = sum(WARMUP + calls for calls in ROUTES.values())
    rows.append(Row("access lines written by the gateway with the log", lines, "", requests, True))
    rows.append(Row("access lines written by the gateway without", off_lines, "", 0))
    return rows


if __name__ == "__main__":
    run_script("access log overhead", measure)
