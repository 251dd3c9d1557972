"""Does the New job page's time estimate come true? WAN, from ten items of history.

One system: web app, control worker, one wan_local worker (the tiny demo WAN pipeline on CPU here;
Wan 2.2 TI2V-5B on a GPU host with WAN_MODEL set). Ten items run first at two amounts of work
(steps x frames), the history the estimate learns from. Then, for each of several new parameter
sets the history never saw, the page's estimate endpoint (`GET /jobs/new/estimate`, what the New
job page shows) is asked about a 3-image job, the job runs, and the figure is its measured run
(created -> finished) over the estimate: the target is 0.5-1.5.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from typing import Any

import requests

from bench.common import BenchSystem, Context, emit, main_for, note, png_bytes, system

BENCH = "estimate"
ENGINE = "wan_local:wan_i2v"
EMAIL = "estimate@example.com"
PASSWORD = "correct-horse-battery"
# (steps, frames) of the history, then of the jobs whose estimate is checked.
HISTORY = [(4, 9), (12, 17)]
CHECKED = [(24, 17), (8, 9), (2, 33)]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", type=int, default=10, help="items run before estimating (default 10)")


def signed_in(base: str) -> requests.Session:
    session = requests.Session()
    html = session.get(f"{base}/login", timeout=30).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert token, "no CSRF token on /login"
    r = session.post(
        f"{base}/login",
        data={"csrf_token": token.group(1), "email": EMAIL, "password": PASSWORD},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text[:300]
    return session


def run_job(s: BenchSystem, keys: list[str], steps: int, frames: int) -> dict[str, Any]:
    job = s.api.submit(keys, provider="wan_local", params={"steps": steps, "num_frames": frames})
    done = s.api.wait(job["id"], timeout=1800)
    done["items"] = s.api.items(job["id"])
    if done["status"] != "succeeded":
        raise RuntimeError(f"WAN job {done['status']}: {[i.get('error') for i in done['items']]}")
    return done


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run(ctx: Context, args: argparse.Namespace) -> None:
    history = 4 if ctx.quick else args.history
    with system(ctx, BENCH, workers=("control", "wan_local")) as s:
        s.stack.flask("create-user", EMAIL, "--password", PASSWORD)
        base = f"http://127.0.0.1:{s.stack.web_port}"
        page = signed_in(base)
        keys = s.api.upload([png_bytes(i) for i in range(3)])
        per_set = history // len(HISTORY)
        for steps, frames in HISTORY:
            done = run_job(s, [keys[i % 3] for i in range(per_set)], steps, frames)
            ran = [round(i["duration_ms"] / 1000, 2) for i in done["items"]]
            note(f"history: {per_set} items at {steps} steps x {frames} frames ran {ran} s")
        for steps, frames in CHECKED:
            p = f"p:{ENGINE}:"
            found = page.get(
                f"{base}/jobs/new/estimate",
                params={"engine": ENGINE, "count": 3, f"{p}steps": steps, f"{p}num_frames": frames},
                timeout=30,
            ).json()
            if not found.get("total_s"):
                raise RuntimeError(f"no estimate after {history} items: {found}")
            done = run_job(s, keys, steps, frames)
            measured = seconds(done["finished_at"]) - seconds(done["created_at"])
            ratio = measured / found["total_s"]
            note(
                f"{steps} steps x {frames} frames: estimate {found['total_s']:.2f} s "
                f"({found['per_item_s']:.3f} s/item over {found['lanes']} lane(s), {found['samples']} runs), "
                f"measured {measured:.2f} s (items ran {[round(i['duration_ms'] / 1000, 2) for i in done['items']]} s)"
            )
            emit(
                BENCH,
                f"measured_over_estimate_{steps}x{frames}",
                ratio,
                "x",
                target="0.5-1.5",
                met=0.5 <= ratio <= 1.5,
                estimate_s=round(found["total_s"], 3),
                measured_s=round(measured, 3),
                history_items=history,
            )


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
