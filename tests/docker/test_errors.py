"""The tests of errors that need the private Docker Engine (docker tier); the story and the other tests
are in tests/unit/test_errors.py.
"""

from __future__ import annotations

from typing import Any

from tests.support.gateway import JSON
from tests.unit.test_errors import expect


async def test_unknown_runtime_is_400(client: Any) -> None:
    for method, path in [
        ("GET", "/api/v1/containers?runtime=podman"),
        ("GET", "/api/v1/containers/abc?runtime=podman"),
        ("POST", "/api/v1/containers/abc/start?runtime=lxc"),
        ("GET", "/api/v1/containers/stats?runtime=kubernetes"),
    ]:
        await expect(await client.request(method, path), 400, "INVALID_RUNTIME")


async def test_unknown_route_and_wrong_method(client: Any) -> None:
    await expect(await client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    await expect(await client.get("/"), 404, "NOT_FOUND")
    body = await expect(await client.delete("/api/v1/containers"), 405, "METHOD_NOT_ALLOWED")
    assert body["message"]
    resp = await client.get("/api/v1/containers/batch/extra/path")
    await expect(resp, 404, "NOT_FOUND")
    await expect(await client.put("/api/v1/containers/abc/start"), 405, "METHOD_NOT_ALLOWED")
    await expect(await client.put("/api/v1/containers/shop/web-0/stop"), 405, "METHOD_NOT_ALLOWED")


async def test_request_id_is_echoed_or_made(client: Any) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-ID": "bad id; <script>" + "x" * 80})
    assert len(resp.headers["X-Request-ID"]) == 32 and "<" not in resp.headers["X-Request-ID"]


async def test_oversized_body_is_json_413(client: Any) -> None:
    resp = await client.post("/api/v1/containers/batch", data=b"x" * (2 << 20), headers=JSON)
    await expect(resp, 413, "PAYLOAD_TOO_LARGE")
