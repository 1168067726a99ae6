"""Harness code shared by the test tiers and the benchmarks: fakes, the fake and the real
Kubernetes control plane, the node agent, a freezable TCP proxy, a WebSocket client and recorded data.

It is an importable package (``tests.support``) so ``bench/``, run as modules from the checkout's
root, uses the very same code without editing ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Recorded documents (Docker stats of both cgroup versions) that the tests read.
DATA = Path(__file__).resolve().parent / "data"
