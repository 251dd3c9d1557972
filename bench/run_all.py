"""Run every benchmark and print the summary table: `python -m bench.run_all [--quick]`.

One throwaway Postgres cluster (or DATABASE_URL's server) serves them all; each benchmark
starts its own system with a fresh database and its own Redis (or REDIS_URL's), and stops
it after. Figures are JSON lines on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from bench import (
    api_latency,
    backlog,
    bulk_submit,
    duty,
    estimate,
    fairness,
    folder_submit,
    overhead,
    recovery,
    scale,
    streams,
    throughput,
    ui_drop,
    wait,
    webhooks,
)
from bench.common import FIGURES, common_args, context, emit, note, table

BENCHMARKS = {
    "throughput": throughput,
    "bulk_submit": bulk_submit,
    "folder_submit": folder_submit,
    "api_latency": api_latency,
    "recovery": recovery,
    "fairness": fairness,
    "backlog": backlog,
    "overhead": overhead,
    "duty": duty,
    "scale": scale,
    "wait": wait,
    "streams": streams,
    "webhooks": webhooks,
    "ui_drop": ui_drop,
    "estimate": estimate,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n")[0])
    common_args(parser)
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the figures to this JSON-lines file"
    )
    args = parser.parse_args(argv)
    chosen = [b for b in (args.only.split(",") if args.only else BENCHMARKS) if b]
    skipped = set(filter(None, args.skip.split(",")))
    unknown = [b for b in [*chosen, *skipped] if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failures = []
    started = time.monotonic()
    with context(args.quick, args.keep) as ctx:
        for name in chosen:
            if name in skipped:
                continue
            module = BENCHMARKS[name]
            sub = argparse.ArgumentParser()
            module.add_args(sub)
            bench_args = sub.parse_args([])
            note(f"--- {name}")
            t = time.monotonic()
            try:
                module.run(ctx, bench_args)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the others
                traceback.print_exc()
                failures.append(name)
                emit(name, "error", None, "", error=f"{type(exc).__name__}: {exc}"[:500])
            note(f"--- {name} took {time.monotonic() - t:.0f} s")
    note(f"all benchmarks took {time.monotonic() - started:.0f} s")
    if args.out:
        args.out.write_text("".join(json.dumps(f) + "\n" for f in FIGURES))
    print()
    print(table())
    if failures:
        print(f"\nfailed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
