"""Render artifacts/reliability.jsonl (written by the fault suite) as the table in docs/reliability.md.

pytest tests/faults && python -m tests.faults.render > /tmp/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults.conftest import RESULTS


def render(path: Path = RESULTS) -> str:
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        latest[row["scenario"]] = row
    head = (
        "| scenario | db | items | succeeded | failed | cancelled | lost | duplicated | retried "
        "| orphan sets | recovery (s) | notes |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in latest.values():
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        lines.append(
            f"| {r['scenario']} | {r['database']} | {r['items']} | {r['succeeded']} | {r['failed']} | {r['cancelled']} "
            f"| **{r['lost']}** | **{r['duplicated']}** | {r['retried']} | {r.get('orphan_sets', 0)} "
            f"| {recovery} | {r['notes']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS) + "\n")
