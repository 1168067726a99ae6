"""Inbound deploy hooks without a daemon: ``nekzus hook create|list|revoke``, the store (the token
kept only as its hash, a file only its owner reads), and ``POST /api/v1/hooks/{token}`` on a fake
runtime: one uniform 404, the two signature styles, the per-token rate limit, revocation on a
running gateway, the browser guard, and input that must start nothing. The actions on the real
Engine are tests/docker/test_hooks.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.notify.hooks import DB_FILE, HookDatabase, secret_problem, token_digest
from nekzus.stacks.actions import StackAction
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import JSON, ClientFactory, make_config
from tests.unit.test_cli_scopes import run
from tests.unit.test_errors import expect
from tests.unit.test_security import REMOTE_ONLY, SECRET, bearer, token

SIGNING_SECRET = "correct-horse-battery-staple"
ROOMY = {"hooks": {"per_minute": 6000, "burst": 1000}}
FAKE = summary(1)


class Hooks:
    """``nekzus hook ...`` on a data directory of the test's own, through ``main``."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = tmp_path / "data"
        self.config_file = tmp_path / "nekzus.yaml"
        self.config_file.write_text(yaml.safe_dump({"server": {"data_dir": str(self.data_dir)}}))
        self.capsys = capsys

    def cli(self, *argv: str) -> tuple[int, str, str]:
        command, *rest = argv
        return run(["hook", command, "--config", str(self.config_file), *rest], self.capsys)

    def create(self, *argv: str) -> tuple[str, str]:
        """A new hook's id and token."""
        code, out, err = self.cli("create", *argv)
        assert code == 0, err
        lines = out.splitlines()
        hook_id = lines[1].removeprefix("# Hook ").split(":")[0]
        return hook_id, lines[0]

    def config(self, docker_host: str, **overrides: Any) -> Config:
        settings: dict[str, Any] = {
            "server": {"data_dir": str(self.data_dir), "tls": {"mode": "off"}},
            "ratelimit": ROOMY,
            **overrides,
        }
        return make_config(docker_host, **settings)


@pytest.fixture
def hooks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Hooks:
    return Hooks(tmp_path, capsys)


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime([FAKE])


async def start(
    gateway: ClientFactory, cli: Hooks, docker_host: str, fake: FakeRuntime, **overrides: Any
) -> TestClient[Any, Any]:
    return await gateway(cli.config(docker_host, **overrides), runtimes=registry_of(fake))


def github(body: bytes, secret: str = SIGNING_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", **JSON}


def uses(hooks: Hooks, hook_id: str) -> int:
    db = HookDatabase.open(hooks.data_dir)
    try:
        return next(h.uses for h in db.all() if h.id == hook_id)
    finally:
        db.close()


async def accepted_restart(
    resp: Any, client: TestClient[Any, Any], reader: dict[str, str] | None = None
) -> str:
    """The 202 of a container restart, exactly as the REST action answers, and its operation done
    (read with ``reader``'s headers where the caller is not on the LAN)."""
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"status", "containerId", "message", "timestamp", "operationId"}
    assert body["containerId"] == FAKE.id and body["status"] == "accepted"
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"
    async with asyncio.timeout(10):
        while True:
            record = await (await client.get(resp.headers["Location"], headers=reader)).json()
            if record["state"] not in ("pending", "running"):
                break
            await asyncio.sleep(0.01)  # polling the record with a deadline
    assert record["action"] == "restart" and record["state"] == "completed", record
    operation_id: str = body["operationId"]
    return operation_id


# -- the command and the store --------------------------------------------------------------------


def test_create_prints_the_token_once_and_stores_only_its_hash(hooks: Hooks) -> None:
    hook_id, tok = hooks.create("--stack", "web", "--action", "deploy", "--name", "CI main")
    assert tok.startswith("nkh_") and len(tok) == 4 + 43
    code, out, _ = hooks.cli("list")
    assert code == 0
    assert hook_id in out and "CI main" in out and "stack web" in out and "deploy" in out
    assert tok not in out
    stored = b"".join(p.read_bytes() for p in hooks.data_dir.glob(DB_FILE + "*"))
    assert tok.encode() not in stored and tok.removeprefix("nkh_").encode() not in stored
    assert token_digest(tok).encode() in stored
    assert (hooks.data_dir / DB_FILE).stat().st_mode & 0o777 == 0o600


def test_a_secret_from_stdin_is_kept_but_never_listed(hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SIGNING_SECRET + "\n"))
    hook_id, _ = hooks.create("--container", "web", "--action", "update", "--signature-secret", "-")
    code, out, _ = hooks.cli("list")
    assert code == 0 and SIGNING_SECRET not in out
    row = next(line for line in out.splitlines() if line.startswith(hook_id))
    assert row.split()[1:6] == ["-", "container", "web", "update", "yes"]
    db = HookDatabase.open(hooks.data_dir)
    try:
        assert [h.secret for h in db.all()] == [SIGNING_SECRET]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--stack", "web", "--action", "update"], "a stack hook's action is one of"),
        (["--container", "web", "--action", "pull-and-deploy"], "a container hook's action is one of"),
        (["--stack", "Web/..", "--action", "deploy"], "is not a stack name"),
        (["--container", "web;rm", "--action", "restart"], "is not a container id or name"),
        (["--stack", "web", "--container", "web", "--action", "restart"], "not allowed with"),
        (["--action", "restart"], "one of the arguments --stack --container is required"),
        (["--stack", "web", "--action", "deploy", "--signature-secret", "short"], "16 to 256"),
        (["--stack", "web", "--action", "deploy", "--signature-secret", " " + "x" * 20], "printable"),
        (["--stack", "web", "--action", "deploy", "--signature-secret", "é" * 20], "printable ASCII"),
        (["--stack", "web", "--action", "deploy", "--name", "a\nb"], "a hook name is"),
    ],
)
def test_bad_arguments_exit_2_and_make_nothing(hooks: Hooks, argv: list[str], said: str) -> None:
    code, out, err = hooks.cli("create", *argv)
    assert code == 2 and out == "" and said in err
    assert "Traceback" not in err
    assert not hooks.data_dir.exists()


def test_revoke_deletes_the_hook_and_an_unknown_id_exits_1(hooks: Hooks) -> None:
    kept, _ = hooks.create("--stack", "web", "--action", "restart")
    gone, _ = hooks.create("--container", "db", "--action", "restart")
    assert hooks.cli("revoke", gone)[0] == 0
    code, _, err = hooks.cli("revoke", gone)
    assert code == 1 and "no hook" in err
    out = hooks.cli("list")[1]
    assert kept in out and gone not in out


def test_an_unusable_data_dir_exits_2_naming_it(hooks: Hooks) -> None:
    hooks.data_dir.write_text("a file, not a directory")
    code, _, err = hooks.cli("list")
    assert code == 2 and "server.data_dir" in err and "Traceback" not in err


def test_pull_and_deploy_is_one_compose_up_that_pulls_always() -> None:
    assert StackAction("deploy", pull=True).compose_args() == [
        "up",
        "--detach",
        "--wait",
        "--pull",
        "always",
    ]
    assert "--pull" not in StackAction("deploy").compose_args()


def test_secret_rules() -> None:
    assert secret_problem("x" * 16) is None and secret_problem("x" * 256) is None
    assert secret_problem("x" * 15) and secret_problem("x" * 257)
    assert secret_problem("x" * 16 + "\t") and secret_problem("\x00" * 16)


# -- the route ------------------------------------------------------------------------------------


async def test_a_hook_starts_the_rest_action_for_a_remote_caller_without_other_auth(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    hook_id, tok = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(gateway, hooks, docker_host, fake, auth={"jwt_secret": SECRET, **REMOTE_ONLY})
    # Remote (not LAN) and no token: every other write route is 401; a hook is its own credential.
    await expect(await client.post(f"/api/v1/containers/{FAKE.id}/restart"), 401, "UNAUTHORIZED")
    reader = bearer(token(scopes=["read:containers"]))
    await accepted_restart(await client.post(f"/api/v1/hooks/{tok}"), client, reader)
    # A bearer without any scope, or a broken one, neither helps nor hurts.
    for headers in (bearer(token(scopes=[])), bearer("x.y.z")):
        await accepted_restart(await client.post(f"/api/v1/hooks/{tok}", headers=headers), client, reader)
    assert uses(hooks, hook_id) == 3
    row = next(line for line in hooks.cli("list")[1].splitlines() if line.startswith(hook_id))
    assert row.split()[-1] == "3" and row.split()[-2] != "-"


async def not_found_answer(resp: Any) -> tuple[int, bytes, dict[str, str]]:
    """What a 404 shows: status, body, and the headers but those that differ per request."""
    headers = {k: v for k, v in resp.headers.items() if k not in ("X-Request-ID", "Date")}
    return resp.status, await resp.read(), headers


async def test_unknown_revoked_malformed_and_disabled_are_one_and_the_same_404(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    revoked_id, revoked = hooks.create("--container", FAKE.name, "--action", "restart")
    _, live = hooks.create("--container", FAKE.name, "--action", "restart")
    assert hooks.cli("revoke", revoked_id)[0] == 0
    client = await start(gateway, hooks, docker_host, fake)
    off = await start(gateway, hooks, docker_host, fake, hooks={"enabled": False})
    unknown = "nkh_" + "A" * 43
    answers = [
        await not_found_answer(await client.post(f"/api/v1/hooks/{path}"))
        for path in (
            unknown,
            revoked,
            "x",
            "nkh_",
            "",
            "a/b/c",
            "%00%ff",
            "nkh_" + "A" * 4000,
            live.upper(),
            live + "x",
            live[:-1],
        )
    ]
    # Hooks turned off: even a live token is the same 404.
    answers.append(await not_found_answer(await off.post(f"/api/v1/hooks/{live}")))
    assert all(answer == answers[0] for answer in answers), answers
    status, body, headers = answers[0]
    assert status == 404 and json.loads(body)["error"] == "HOOK_NOT_FOUND"
    assert "RateLimit-Limit" in headers
    # The live token itself works, on the gateway that has hooks on.
    await accepted_restart(await client.post(f"/api/v1/hooks/{live}"), client)
    # Another method is 405 for every token alike.
    for path in (live, unknown):
        resp = await client.get(f"/api/v1/hooks/{path}")
        assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_revocation_takes_effect_on_the_running_gateway_at_once(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    client = await start(gateway, hooks, docker_host, fake)
    # Made while the gateway runs: found at once too.
    hook_id, tok = hooks.create("--container", FAKE.name, "--action", "restart")
    await accepted_restart(await client.post(f"/api/v1/hooks/{tok}"), client)
    # The gateway's connection keeps the write-ahead log open: it is its owner's only too.
    files = list(hooks.data_dir.glob(DB_FILE + "*"))
    assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert hooks.cli("revoke", hook_id)[0] == 0
    await expect(await client.post(f"/api/v1/hooks/{tok}"), 404, "HOOK_NOT_FOUND")


async def test_a_signed_hook_takes_either_header_style_and_nothing_else(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    hook_id, tok = hooks.create(
        "--container", FAKE.name, "--action", "restart", "--signature-secret", SIGNING_SECRET
    )
    client = await start(gateway, hooks, docker_host, fake)
    path = f"/api/v1/hooks/{tok}"
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    digest = hmac.new(SIGNING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    refused: list[tuple[bytes, dict[str, str]]] = [
        (body, JSON),
        (body, github(body, "another-secret-of-16")),
        (body + b" ", github(body)),
        (body, {"X-Hub-Signature-256": digest, **JSON}),
        (body, {"X-Hub-Signature-256": f"sha1={digest}", **JSON}),
        (body, {"X-Hub-Signature-256": "sha256=", **JSON}),
        (body, {"X-Hub-Signature-256": "sha256=\u00e9" * 10, **JSON}),
        (body, {"X-Gitlab-Token": SIGNING_SECRET + "x", **JSON}),
        (body, {"X-Gitlab-Token": SIGNING_SECRET.upper(), **JSON}),
        (body, {"X-Gitlab-Token": "", **JSON}),
        # A right header does not excuse a wrong one beside it.
        (body, {**github(body), "X-Gitlab-Token": "wrong-token-wrong-token"}),
        (body, {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-Gitlab-Token": SIGNING_SECRET, **JSON}),
    ]
    for data, headers in refused:
        resp = await client.post(path, data=data, headers=headers)
        await expect(resp, 401, "HOOK_SIGNATURE_INVALID")
        assert resp.headers["WWW-Authenticate"].startswith("HMAC-SHA256")
    # Two headers of one kind: aiohttp's client would merge a dict, so a list of pairs.
    twice = [("X-Gitlab-Token", SIGNING_SECRET), ("X-Gitlab-Token", SIGNING_SECRET)]
    await expect(await client.post(path, headers=twice), 401, "HOOK_SIGNATURE_INVALID")
    assert uses(hooks, hook_id) == 0 and len(fake.timeouts) == 0
    await accepted_restart(await client.post(path, data=body, headers=github(body)), client)
    upper = {"X-Hub-Signature-256": f"sha256={digest.upper()}", **JSON}
    await accepted_restart(await client.post(path, data=body, headers=upper), client)
    await accepted_restart(
        await client.post(path, data=body, headers={"X-Gitlab-Token": SIGNING_SECRET, **JSON}), client
    )
    # No body at all is signed too (an HMAC of nothing), as a CI's bare POST is.
    await accepted_restart(await client.post(path, headers=github(b"")), client)
    assert uses(hooks, hook_id) == 4


async def test_the_body_is_only_signed_never_parsed_and_bounded_by_the_app(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    _, signed = hooks.create(
        "--container", FAKE.name, "--action", "restart", "--signature-secret", SIGNING_SECRET
    )
    _, plain = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(gateway, hooks, docker_host, fake)
    deep = b"[" * 100_000 + b"]" * 100_000
    odd = b'{"timeout": NaN, "services": 1e999, "unknown": [1, 2]}'
    for data in (deep, odd, b"not json at all"):
        await accepted_restart(
            await client.post(f"/api/v1/hooks/{signed}", data=data, headers=github(data)), client
        )
        await accepted_restart(await client.post(f"/api/v1/hooks/{plain}", data=data, headers=JSON), client)
    huge = b" " * ((1 << 20) + 1)
    for tok, headers in ((signed, github(huge)), (plain, JSON)):
        resp = await client.post(f"/api/v1/hooks/{tok}", data=huge, headers=headers)
        await expect(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_a_query_is_refused_so_the_caller_cannot_move_the_target(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    _, tok = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(gateway, hooks, docker_host, fake)
    for query in ("?runtime=kubernetes", "?namespace=kube-system", "?force=true", "?"):
        resp = await client.post(f"/api/v1/hooks/{tok}{query}")
        if query == "?":
            await accepted_restart(resp, client)  # an empty query is no query
        else:
            await expect(resp, 400, "INVALID_REQUEST")
    # An unknown token with a query is still the plain 404.
    await expect(await client.post("/api/v1/hooks/nkh_x?runtime=docker"), 404, "HOOK_NOT_FOUND")


async def test_a_gone_container_is_its_own_404_after_a_valid_token(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    _, tok = hooks.create("--container", "no-such-container", "--action", "restart")
    _, update = hooks.create("--container", FAKE.name, "--action", "update")
    _, stack = hooks.create("--stack", "web", "--action", "deploy")
    client = await start(gateway, hooks, docker_host, fake)
    await expect(await client.post(f"/api/v1/hooks/{tok}"), 404, "CONTAINER_NOT_FOUND")
    # The fake runtime neither updates nor drives compose: the REST routes' own 409.
    await expect(await client.post(f"/api/v1/hooks/{update}"), 409, "OPERATION_NOT_SUPPORTED")
    await expect(await client.post(f"/api/v1/hooks/{stack}"), 409, "OPERATION_NOT_SUPPORTED")


async def test_each_token_is_rate_limited_alone_known_or_not(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    _, first = hooks.create("--container", FAKE.name, "--action", "restart")
    _, second = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(
        gateway, hooks, docker_host, fake, ratelimit={"hooks": {"per_minute": 1, "burst": 2}}
    )
    for _ in range(2):
        await accepted_restart(await client.post(f"/api/v1/hooks/{first}"), client)
        await expect(await client.post("/api/v1/hooks/nkh_unknown"), 404, "HOOK_NOT_FOUND")
    for path in (first, "nkh_unknown"):
        resp = await client.post(f"/api/v1/hooks/{path}")
        await expect(resp, 429, "RATE_LIMITED")
        assert int(resp.headers["Retry-After"]) >= 1 and resp.headers["RateLimit-Remaining"] == "0"
    # Another token has a window of its own, and the container pool is not touched.
    await accepted_restart(await client.post(f"/api/v1/hooks/{second}"), client)
    assert (await client.get("/api/v1/containers")).status == 200


async def test_a_cross_site_browser_post_is_refused_and_a_ci_post_is_not(
    gateway: ClientFactory, hooks: Hooks, docker_host: str, fake: FakeRuntime
) -> None:
    hook_id, tok = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(gateway, hooks, docker_host, fake)
    path = f"/api/v1/hooks/{tok}"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        await expect(await client.post(path, headers=headers), 403, "ORIGIN_NOT_ALLOWED")
    # A form is what a page may post cross-site without asking: refused like everywhere else.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    await expect(await client.post(path, data=b"payload=%7B%7D", headers=form), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert uses(hooks, hook_id) == 0 and len(fake.timeouts) == 0
    # What a CI sends: a bare POST (curl -X POST), or JSON with a user agent of its own.
    await accepted_restart(await client.post(path), client)
    ci = {"User-Agent": "GitHub-Hookshot/abc", "X-GitHub-Event": "push", **JSON}
    await accepted_restart(await client.post(path, data=b"{}", headers=ci), client)


async def test_a_store_that_cannot_record_a_use_still_lets_the_hook_run(
    gateway: ClientFactory,
    hooks: Hooks,
    docker_host: str,
    fake: FakeRuntime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook_id, tok = hooks.create("--container", FAKE.name, "--action", "restart")
    client = await start(gateway, hooks, docker_host, fake)

    def locked(self: HookDatabase, hook_id: str, now: float) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(HookDatabase, "used", locked)
    await accepted_restart(await client.post(f"/api/v1/hooks/{tok}"), client)
    assert f"the use of hook {hook_id} could not be recorded" in caplog.text
    monkeypatch.undo()
    assert uses(hooks, hook_id) == 0


def test_a_store_that_fails_under_the_command_exits_1_saying_so(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks.create("--stack", "web", "--action", "deploy")

    def locked(self: HookDatabase) -> list[Any]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(HookDatabase, "all", locked)
    code, out, err = hooks.cli("list")
    assert code == 1 and out == "" and "database is locked" in err and "Traceback" not in err
