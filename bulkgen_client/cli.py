"""`bulkgen submit`: upload images, run a job on them, watch it, fetch the results.

Exit status: 0 when every item succeeded (or, without --wait, when the job was accepted); 1 when
any failed or was cancelled; 2 for a usage error or an error from the API.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bulkgen_client.client import DEFAULT_URL, ApiError, Client, UploadRejected
from bulkgen_client.inputs import UsageError, collect_images, match_rows, parse_param, read_prompts

PROG = "bulkgen submit"
USAGE = (
    "bulkgen submit PROVIDER PATH... [--model M] [--prompt P] [--prompts FILE.csv|FILE.jsonl]\n"
    "       [--param K=V]... [--priority P] [--wait] [--download DIR] [--url U] [--token T]"
)
EPILOG = """\
Folders are searched recursively for .png, .jpg, .jpeg and .webp files.

--prompts names a CSV file (a column `file`, `name` or `key` with the image's file name, its path
below the folder given or its name without the extension; a column `prompt`; `negative_prompt`,
`seed` and `prompts` -- concepts separated by `;` -- where present; any other column is a parameter
of that image, read as JSON when it parses) or a JSON Lines file ({"file": "cat.jpg", "prompt":
"...", "params": {...}} per line). An image without a row, or a row without a prompt, gets --prompt;
every image gets the --param values unless its row says otherwise.

--download DIR saves each result under its input's name (cat.jpg -> cat.mp4; further outputs of an
item add their role: cat.poster.png). Existing files are never overwritten: a taken name becomes
cat-2.mp4, and so on. The files are fetched from each item's output URL, four at a time.

Exit status: 0 every item succeeded (or the job was accepted, without --wait); 1 some item failed
or was cancelled; 2 usage or API error.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        description="Upload images, run one job over them, and optionally wait and download the results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("provider", metavar="PROVIDER", help="wan_local, runway, sam3, echo, ...")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files and folders")
    p.add_argument("--model", metavar="M", help="the provider's model (default: the provider's default)")
    p.add_argument("--prompt", metavar="P", help="prompt for every image without its own")
    p.add_argument("--prompts", metavar="FILE", help="per-image prompts and parameters: .csv or .jsonl")
    p.add_argument(
        "--param",
        metavar="K=V",
        action="append",
        default=[],
        help="job parameter, repeatable; V is read as JSON when it parses (3, 0.5, true), else a string",
    )
    p.add_argument("--priority", metavar="P", help="low, normal or high")
    p.add_argument("--wait", action="store_true", help="show progress until the job finishes")
    p.add_argument("--download", metavar="DIR", help="save the results into DIR (implies --wait)")
    p.add_argument("--url", metavar="U", help=f"server (default: $BULKGEN_URL, else {DEFAULT_URL})")
    p.add_argument("--token", metavar="T", help="API token (default: $BULKGEN_TOKEN)")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        return _fail(str(exc))
    except UploadRejected as exc:
        for r in exc.rejected:
            print(f"refused: {r['path']}: {r['error']}", file=sys.stderr)
        return _fail(str(exc))
    except ApiError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


class Display:
    """Progress bars on a terminal (stderr); on anything else (a log, a pipe), a line per change."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal

    def bytes_bar(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )

    def count_bar(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _job_detail(job: dict[str, Any]) -> str:
    c = job["counts"]
    parts = [f"{c.get('running', 0)} running", f"{c.get('failed', 0)} failed"]
    if c.get("cancelled"):
        parts.append(f"{c['cancelled']} cancelled")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    files = collect_images(args.paths)
    rows = match_rows(files, read_prompts(args.prompts)) if args.prompts else [None] * len(files)
    params = dict(parse_param(p) for p in args.param)
    wait = args.wait or args.download is not None
    if args.download and os.path.exists(args.download) and not os.path.isdir(args.download):
        raise UsageError(f"--download {args.download}: not a folder")
    client = Client(args.url, args.token)
    display = Display()

    total_bytes = sum(f.path.stat().st_size for f in files)
    with display.bytes_bar() as bar:
        task = bar.add_task(f"uploading {len(files)} images", total=total_bytes)
        assets = client.upload([f.path for f in files], lambda done, _: bar.update(task, completed=done))
    display.say(f"uploaded {len(files)} images ({_size(total_bytes)})")

    inputs = [
        row.entry(asset["key"]) if row is not None else asset["key"]
        for asset, row in zip(assets, rows, strict=True)
    ]
    job = client.create(
        args.provider,
        inputs,
        model=args.model,
        prompt=args.prompt,
        params=params or None,
        priority=args.priority,
    )
    job_id = job["id"]
    print(f"job {job_id}: {job['total']} items, provider {job['provider']}, model {job['model']}", flush=True)
    if not wait:
        return 0

    try:
        job = _watch(client, display, job)
    except KeyboardInterrupt:
        print(f"\nstopped watching; job {job_id} goes on (POST /api/v1/jobs/{job_id}/cancel stops it)")
        return 130

    c = job["counts"]
    failed = [
        item
        for status in ("failed", "cancelled")
        if c.get(status)
        for item in client.items(job_id, status=status)
    ]
    failed.sort(key=lambda i: i["index"])
    if args.download:
        names = [f.rel for f in files]
        n = job["counts"].get("succeeded", 0)
        with display.count_bar() as bar:
            task = bar.add_task("downloading", total=n, detail="")
            paths = client.download(
                job_id, args.download, names=names, progress=lambda done, _: bar.update(task, completed=done)
            )
        display.say(f"downloaded {len(paths)} files into {args.download}")

    print(
        f"job {job_id} {job['status']}: {c.get('succeeded', 0)} succeeded, {c.get('failed', 0)} failed"
        + (f", {c['cancelled']} cancelled" if c.get("cancelled") else "")
    )
    for item in failed:
        name = files[item["index"]].rel if item["index"] < len(files) else item["input_key"]
        code = f" [{item['error_code']}]" if item.get("error_code") else ""
        print(f"  {item['status']}: {name}: {item.get('error') or item['status']}{code}")
    return 0 if not failed and job["status"] == "succeeded" else 1


def _watch(client: Client, display: Display, job: dict[str, Any]) -> dict[str, Any]:
    """Follow the job until it finishes: a bar on a terminal, else a line whenever the counts change
    (at most every 10 s, and always the last)."""
    last: list[Any] = [None, 0.0]

    with display.count_bar() as bar:
        task = bar.add_task("running", total=job["total"], detail="")

        def show(j: dict[str, Any]) -> None:
            c = j["counts"]
            done = c.get("succeeded", 0) + c.get("failed", 0) + c.get("cancelled", 0)
            bar.update(task, completed=done, detail=_job_detail(j), description=j["status"])
            if not display.live:
                state = (j["status"], done, c.get("failed", 0))
                finished = j["status"] in ("succeeded", "failed", "cancelled")
                if state != last[0] and (finished or time.monotonic() - last[1] >= 10):
                    last[:] = [state, time.monotonic()]
                    display.say(f"{j['status']}: {done}/{j['total']} done, {_job_detail(j)}")

        show(job)
        return client.wait(job["id"], on_progress=show)
