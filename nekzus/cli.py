"""The ``nekzus`` command: ``serve``, ``token create`` and ``apikey create``."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import re
import secrets
import sys
import textwrap

import yaml

from . import __version__
from .config import Config, ConfigError, load_config
from .http.app import create_app
from .http.server import HandshakeLimits, ListenError, serve
from .logsetup import configure_logging
from .security.auth import SCOPES, WILDCARD_SCOPES, authority_from_config, hash_api_key, is_known_scope
from .security.tls import server_ssl_context

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
    return parser


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
    return _serve(config)


if __name__ == "__main__":
    sys.exit(main())
