"""The ``nekzus`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from . import __version__
from .app import create_app
from .config import ConfigError, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nekzus", description="Container-management gateway")
    parser.add_argument("--version", action="version", version=f"nekzus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML configuration file (default: $NEKZUS_CONFIG)")
    return parser


def _serve(config_path: str | None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"nekzus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        access_log=None,
        print=lambda msg: logging.getLogger("nekzus").info("%s", msg.strip()),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
