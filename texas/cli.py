"""The command line: `texas serve`, `texas dev`, `texas token`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from texas.config import Config
from texas.errors import ConfigError
from texas.ops import logs

EXIT_CONFIG = 2


def serve(args: argparse.Namespace) -> int:
    from texas import server

    try:
        config = Config.from_env(os.environ)
    except ConfigError as e:
        print(f"texas: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    server.run_async(server.serve(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from texas.devidp import command as dev

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
