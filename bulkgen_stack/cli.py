"""The `bulkgen` command: `up` (everything on this machine), `check` (a smoke check), `submit` (the client).

Nothing of the server is imported before a subcommand is chosen, so `bulkgen submit` stays light.
"""

from __future__ import annotations

import argparse
import os
import sys


def _up(args: argparse.Namespace) -> int:
    from bulkgen_stack.up import up

    return up(args)


def _check(args: argparse.Namespace) -> int:
    from bulkgen_stack.check import check

    return check(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["submit"]:  # the client: before anything of the server's is imported
        from bulkgen_client.cli import main as submit

        return submit(argv[1:])
    parser = argparse.ArgumentParser(prog="bulkgen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("submit", help="upload images, run a job, fetch results (bulkgen submit --help)")
    p_up = sub.add_parser("up", help="start everything on this machine")
    p_up.add_argument("--var", default=os.environ.get("VAR_DIR", "var"))
    p_up.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "5000")))
    p_up.add_argument("--flower-port", type=int, default=5555)
    p_up.set_defaults(func=_up)
    p_check = sub.add_parser("check", help="run one echo item through a running stack")
    p_check.add_argument("--url", default=os.environ.get("PUBLIC_URL", "http://127.0.0.1:5000"))
    p_check.add_argument("--var", default=os.environ.get("VAR_DIR", "var"))
    p_check.add_argument("--token", default=None)
    p_check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
