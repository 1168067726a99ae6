"""The ``nekzus`` command: ``serve``, ``token create``, ``apikey create`` and ``hook ...``."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import re
import secrets
import sqlite3
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__
from .config import Config, ConfigError, load_config
from .http.app import create_app
from .http.server import HandshakeLimits, ListenError, serve
from .logsetup import configure_logging
from .notify.hooks import (
    ACTIONS,
    GITHUB_HEADER,
    GITLAB_HEADER,
    MAX_NAME,
    PATH_PREFIX,
    HookDatabase,
    open_database,
    secret_problem,
)
from .params import is_valid_container_id
from .security.auth import SCOPES, WILDCARD_SCOPES, authority_from_config, hash_api_key, is_known_scope
from .security.tls import server_ssl_context
from .stacks.names import is_stack_name

EXIT_FAILED = 1
EXIT_CONFIG = 2
_DURATION = re.compile(r"([0-9]+)([smhd]?)")  # ASCII digits, whole string
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HELP_WIDTH = 88


def duration(text: str) -> int:
    """Seconds of ``90``, ``30m``, ``12h`` or ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 30m, 12h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def scope_list(text: str) -> list[str]:
    """Space-separated scope names, each one some route asks for (or a wildcard covering one)."""
    scopes = text.split()
    if not scopes:
        raise argparse.ArgumentTypeError('give at least one scope, e.g. "read:containers"')
    for scope in scopes:
        if not is_known_scope(scope):
            known = [name for name, _ in (*SCOPES, *WILDCARD_SCOPES)]
            close = difflib.get_close_matches(scope, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown scope {scope!r}{hint}; the scopes are {', '.join(known)}"
            )
    return scopes


def _scope_help() -> str:
    """The scopes and what each grants, as the epilog of the commands that take them."""
    width = max(len(name) for name, _ in (*SCOPES, *WILDCARD_SCOPES))
    lines = ["scopes (--scopes, space-separated) and what each grants:"]
    for name, grants in (*SCOPES, *WILDCARD_SCOPES):
        lines += textwrap.wrap(
            grants,
            width=_HELP_WIDTH,
            initial_indent=f"  {name:<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
    lines.append("LAN clients need no token and may do everything (auth.allow_local).")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nekzus", description="Container-management gateway")
    parser.add_argument("--version", action="version", version=f"nekzus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "YAML configuration file (default: $NEKZUS_CONFIG)"

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=config_help)

    token = commands.add_parser("token", help="issue access tokens").add_subparsers(
        dest="action", required=True
    )
    raw = argparse.RawDescriptionHelpFormatter
    create = token.add_parser("create", help="print a signed JWT", epilog=_scope_help(), formatter_class=raw)
    create.add_argument("--config", help=config_help)
    create.add_argument("--subject", required=True, help="who the token stands for")
    create.add_argument(
        "--scopes", required=True, type=scope_list, help='space-separated, e.g. "read:* write:containers"'
    )
    create.add_argument("--ttl", type=duration, default=duration("12h"), help="lifetime: 3600, 30m, 12h, 7d")

    apikey = commands.add_parser("apikey", help="make API keys").add_subparsers(dest="action", required=True)
    make = apikey.add_parser(
        "create",
        help="print a new API key and the config entry that stores its hash",
        epilog=_scope_help(),
        formatter_class=raw,
    )
    make.add_argument("--name", required=True, help="the key's name, which becomes the token subject")
    make.add_argument(
        "--scopes", required=True, type=scope_list, help='space-separated, e.g. "read:containers"'
    )
    _hook_parser(commands, config_help)
    return parser


def _hook_name(text: str) -> str:
    if not text.strip() or len(text) > MAX_NAME or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a hook name is 1 to {MAX_NAME} printable characters")
    return text


def _stack_target(text: str) -> str:
    if not is_stack_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a stack name (1 to 63 of a-z, 0-9, '_', '-', starting with a letter or digit)"
        )
    return text


def _container_target(text: str) -> str:
    if not is_valid_container_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a container id or name")
    return text


def _hook_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str) -> None:
    # Not "action": hook create has an --action of its own.
    hook = commands.add_parser("hook", help="make, list and revoke inbound deploy hooks").add_subparsers(
        dest="hook_command", required=True
    )
    actions = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in ACTIONS.items())
    create = hook.add_parser(
        "create",
        help="make a hook and print its token, once",
        description=f"Make a deploy hook: POST {PATH_PREFIX}<token> then runs its action ({actions}).",
    )
    create.add_argument("--config", help=config_help)
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--stack", type=_stack_target, help="the stack the hook acts on")
    target.add_argument(
        "--container",
        type=_container_target,
        help="the container the hook acts on: give its name for an update, which makes a new id",
    )
    create.add_argument("--action", required=True, help=actions)
    create.add_argument("--name", type=_hook_name, help="what the hook is for, shown by list")
    create.add_argument(
        "--signature-secret",
        metavar="SECRET",
        help="also require X-Hub-Signature-256 (GitHub, Gitea, Forgejo) or X-Gitlab-Token made with this "
        "secret; '-' reads it from the first line of stdin, which keeps it out of the shell's history",
    )
    listing = hook.add_parser("list", help="list the hooks (never their tokens or secrets)")
    listing.add_argument("--config", help=config_help)
    revoke = hook.add_parser("revoke", help="delete a hook: its URL answers 404 from then on")
    revoke.add_argument("--config", help=config_help)
    revoke.add_argument("id", help="the hook's id, as list shows it")


def _serve(config: Config) -> int:
    configure_logging(config.logging)
    try:
        app = create_app(config)
        ssl_context = server_ssl_context(config)
    except ConfigError as exc:
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    tls = config.server.tls
    limits = HandshakeLimits(
        tls.handshake_timeout, tls.max_pending_handshakes, tls.max_pending_handshakes_per_client
    )
    try:
        asyncio.run(serve(app, config.server.host, config.server.port, ssl_context, limits, access_log=None))
    except (ListenError, ConfigError) as exc:
        # ConfigError: raised while starting up, e.g. a data_dir the operation store cannot use.
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass  # Ctrl-C before the signal handlers were in place: nothing was serving yet
    return 0


def _token(config: Config, subject: str, scopes: list[str], ttl: int) -> int:
    try:
        token = authority_from_config(config).issue(subject, scopes, ttl)
    except ConfigError as exc:
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _apikey(name: str, scopes: list[str]) -> int:
    key = "nkz_" + secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": hash_api_key(key), "scopes": scopes}
    print(key)
    print("# The key above is shown only this once. Add this entry under auth.api_keys:")
    print("- " + yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=400).rstrip())
    return 0


def _when(moment: float | None) -> str:
    return "-" if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass(frozen=True, slots=True)
class _NewHook:
    kind: str
    target: str
    action: str
    name: str | None
    secret: str | None


def _new_hook(args: argparse.Namespace) -> _NewHook | str:
    """What ``hook create`` was asked to make, or what is wrong with it (before any file is touched)."""
    kind, target = ("stack", args.stack) if args.stack is not None else ("container", args.container)
    if args.action not in ACTIONS[kind]:
        return f"--action: a {kind} hook's action is one of {', '.join(ACTIONS[kind])}"
    secret = args.signature_secret
    if secret == "-":
        secret = sys.stdin.readline().rstrip("\r\n")
    if secret is not None and (problem := secret_problem(secret)) is not None:
        return f"--signature-secret: {problem}"
    return _NewHook(kind, target, args.action, args.name, secret)


def _hook_create(db: HookDatabase, new: _NewHook) -> int:
    hook, token = db.create(
        kind=new.kind, target=new.target, action=new.action, name=new.name, secret=new.secret
    )
    signed = f", signed ({GITHUB_HEADER} or {GITLAB_HEADER})" if new.secret is not None else ""
    print(token)
    print(f"# Hook {hook.id}: {hook.describe()}{signed}. The token above is shown only this once.")
    print(f"# Its URL, on the gateway: POST {PATH_PREFIX}{token}")
    return 0


def _hook_list(db: HookDatabase) -> int:
    rows = [("ID", "NAME", "TARGET", "ACTION", "SIGNED", "CREATED", "LAST USED", "USES")]
    for hook in db.all():
        rows.append(
            (
                hook.id,
                hook.name or "-",
                f"{hook.kind} {hook.target}",
                hook.action,
                "yes" if hook.secret is not None else "no",
                _when(hook.created_at),
                _when(hook.last_used_at),
                str(hook.uses),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _hook(data_dir: Path, args: argparse.Namespace) -> int:
    new = _new_hook(args) if args.hook_command == "create" else None
    if isinstance(new, str):
        print(f"nekzus: {new}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        db = open_database(data_dir)
    except ConfigError as exc:
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if new is not None:
            return _hook_create(db, new)
        if args.hook_command == "list":
            return _hook_list(db)
        if not db.revoke(args.id):
            print(f"nekzus: there is no hook {args.id!r} (nekzus hook list shows them)", file=sys.stderr)
            return EXIT_FAILED
        print(f"Hook {args.id} revoked: its URL answers 404 from now on")
        return 0
    except sqlite3.Error as exc:
        # A store another process holds locked past the timeout, or a damaged file.
        print(f"nekzus: the deploy hooks in {data_dir} could not be used: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "apikey":
        return _apikey(args.name, args.scopes)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "token":
        return _token(config, args.subject, args.scopes, args.ttl)
    if args.command == "hook":
        return _hook(config.server.data_dir, args)
    return _serve(config)


if __name__ == "__main__":
    sys.exit(main())
