"""``python -m hostward.agent enroll|run|status``: the agent without the full CLI's imports.

A systemd unit should start the agent this way: it keeps typer/rich (and their memory) out of a
process that runs forever.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from hostward.agent import cli

    parser = argparse.ArgumentParser(prog="python -m hostward.agent", description="hostward agent")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    enroll = sub.add_parser("enroll", help="enroll this host with a manager")
    enroll.add_argument("--manager", required=True, help="agent channel URL, https://host:10180")
    enroll.add_argument("--token", required=True)
    enroll.add_argument("--ca-fingerprint", required=True, help="sha256:<hex> from the install command")
    enroll.add_argument("--state-dir", required=True)
    enroll.add_argument("--name", default=None)

    run = sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--state-dir", required=True)
    run.add_argument("--log-source", action="append", default=[], dest="log_sources")

    status = sub.add_parser("status", help="show enrollment, outbox and heartbeat state")
    status.add_argument("--state-dir", required=True)
    status.add_argument("--json", action="store_true", dest="as_json")

    args = parser.parse_args(argv)
    if args.command == "enroll":
        return cli.enroll_cmd(
            args.manager, args.token, args.ca_fingerprint, args.state_dir, args.name, debug=args.debug
        )
    if args.command == "run":
        return cli.run_cmd(args.state_dir, args.log_sources, debug=args.debug)
    return cli.status_cmd(args.state_dir, args.as_json, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
