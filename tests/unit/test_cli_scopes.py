"""``nekzus token create`` and ``apikey create``: the help lists every scope and what it grants, and
a scope no route asks for (a typo such as ``write:container``) is refused with exit code 2."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from nekzus.cli import main
from nekzus.security.auth import SCOPES, WILDCARD_SCOPES, is_known_scope

SECRET = "s" * 40


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["token", "apikey"])
def test_the_help_lists_every_scope_and_what_it_grants(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([command, "create", "--help"], capsys)
    assert code == 0
    for name, grants in (*SCOPES, *WILDCARD_SCOPES):
        assert f"  {name} " in out
        assert grants.split()[0] in out
    text = " ".join(out.split())
    assert "pull, delete and prune images" in text and "the host's information and load" in text


@pytest.mark.parametrize(
    ("scopes", "hint"),
    [
        ("write:container", "did you mean 'write:containers'?"),
        ("read:containers reed:engine", "did you mean 'read:engine'?"),
        ("delete:*", "the scopes are"),
        ("write*", "the scopes are"),
        ("*:containers", "the scopes are"),
        ("read:containers:*", "the scopes are"),
        ("", "at least one scope"),
    ],
)
@pytest.mark.parametrize("command", ["token", "apikey"])
def test_an_unknown_scope_is_refused_with_exit_code_2(
    command: str, scopes: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    who = ["--subject", "ci"] if command == "token" else ["--name", "phone"]
    code, out, err = run([command, "create", *who, "--scopes", scopes], capsys)
    assert code == 2 and out == ""
    assert "argument --scopes" in err and hint in err
    assert "Traceback" not in err


def test_known_scopes_and_wildcards_make_a_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NEKZUS_CONFIG", "NEKZUS_AUTH__JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  data_dir: {tmp_path}\nauth:\n  jwt_secret: {SECRET}\n")
    scopes = "read:containers write:containers read:engine write:engine read:* write:* *"
    code, out, err = run(
        ["token", "create", "--config", str(config), "--subject", "ci", "--scopes", scopes], capsys
    )
    assert code == 0, err
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"], audience="nekzus-clients")
    assert claims["scopes"] == scopes.split()


def test_a_wildcard_is_known_when_it_covers_a_scope() -> None:
    assert all(is_known_scope(name) for name, _ in (*SCOPES, *WILDCARD_SCOPES))
    assert not any(is_known_scope(s) for s in ("write:container", "delete:*", "read:engine:*", "", "read"))
