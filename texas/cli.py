"""The command line: `texas serve`, `texas dev`, `texas token`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from . import logs
from .config import Config
from .errors import ConfigError

EXIT_CONFIG = 2
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (it is a dependency on Linux), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def serve(args: argparse.Namespace) -> int:
    from . import server

    try:
        config = Config.from_env(os.environ)
    except ConfigError as e:
        print(f"texas: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    run_async(server.serve(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import dev

    parser = argparse.ArgumentParser(prog="texas", description="Token introspection as a service.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("serve", help="run the service, configured from the environment")
    p.set_defaults(func=serve)
    p = commands.add_parser("dev", help="run the service with an embedded development identity provider")
    dev.configure_dev_parser(p)
    p.set_defaults(func=dev.run_dev)
    p = commands.add_parser("token", help="print a token that a running `texas dev` accepts")
    dev.configure_token_parser(p)
    p.set_defaults(func=dev.run_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
