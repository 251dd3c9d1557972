"""/metrics: protected, computed at scrape time, and moving with the work.

The web app runs two gunicorn processes, so consecutive scrapes land on different processes: the
values only rise and fall together because nothing is counted in process memory.
"""

from __future__ import annotations

import time

import requests

from tests.conftest import System
from tests.ops.helpers import METRICS_AUTH, scrape, value, wait_for_epoch
from tests.support import distinct_pngs

ITEMS, DELAY_S = 8, 0.8


def test_metrics_need_a_token_or_the_configured_basic_auth(observed: System) -> None:
    url = f"{observed.base_url}/metrics"
    anonymous = requests.get(url, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url, auth=("prometheus", "wrong"), timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer bg_nope"}, timeout=30).status_code == 401
    assert requests.get(url, auth=METRICS_AUTH, timeout=30).status_code == 200
    bearer = requests.get(url, headers={"Authorization": f"Bearer {observed.token}"}, timeout=30)
    assert bearer.status_code == 200 and "bulkgen_items" in bearer.text


def test_series_move_while_a_job_runs(observed: System) -> None:
    api = observed.api
    wait_for_epoch(observed)
    before = scrape(observed, METRICS_AUTH)
    succeeded_before = value(before, "bulkgen_items", 0.0, provider="echo", status="succeeded")
    count_before = value(before, "bulkgen_item_duration_seconds_count", 0.0, provider="echo", model="echo")
    retries_before = value(before, "bulkgen_item_retries_total", 0.0, provider="echo")

    keys = api.upload(distinct_pngs(ITEMS, seed=71))
    job = api.submit(keys, params={"delay_s": DELAY_S, "queue": "wan_local"})
    depths, succeeded, counts, running, waited = [], [], [], [], []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        s = scrape(observed, METRICS_AUTH)
        # Waiting: in the broker's window, or pending in Postgres for a place in it.
        depths.append(
            value(s, "bulkgen_queue_depth", queue="wan_local")
            + value(s, "bulkgen_items_pending", queue="wan_local")
        )
        succeeded.append(value(s, "bulkgen_items", 0.0, provider="echo", status="succeeded"))
        running.append(value(s, "bulkgen_items", 0.0, provider="echo", status="running"))
        counts.append(value(s, "bulkgen_item_duration_seconds_count", 0.0, provider="echo", model="echo"))
        waited.append(value(s, "bulkgen_oldest_queued_item_age_seconds", queue="wan_local"))
        if succeeded[-1] == succeeded_before + ITEMS and depths[-1] == 0:
            break
        time.sleep(0.3)
    after = s
    assert api.job(job["id"])["status"] == "succeeded"

    # The waiting items (one worker process, prefetch 1) were held back, then drained.
    assert max(depths) >= 2, depths
    assert depths[-1] == 0
    # Succeeded rose in steps while the job ran, never fell, and ended exactly ITEMS higher.
    assert succeeded == sorted(succeeded), succeeded
    assert len({v for v in succeeded if succeeded_before < v < succeeded_before + ITEMS}) >= 2, succeeded
    assert succeeded[-1] == succeeded_before + ITEMS
    assert max(running) == 1 and running[-1] == 0, running
    assert max(waited) > 0 and waited[-1] == 0, waited
    # The duration histogram counted every item, in order, with plausible values.
    assert counts == sorted(counts) and counts[-1] == count_before + ITEMS, counts
    labels = {"provider": "echo", "model": "echo"}
    total = value(after, "bulkgen_item_duration_seconds_sum", **labels) - value(
        before, "bulkgen_item_duration_seconds_sum", 0.0, **labels
    )
    assert ITEMS * DELAY_S <= total < ITEMS * (DELAY_S + 5)
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in after.items()
        if k[0] == "bulkgen_item_duration_seconds_bucket" and dict(k[1])["provider"] == "echo"
    )
    assert buckets[-1] == (float("inf"), count_before + ITEMS)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert value(after, "bulkgen_item_duration_seconds_bucket", le="0.5", **labels) == value(
        before, "bulkgen_item_duration_seconds_bucket", 0.0, le="0.5", **labels
    ), "every item took at least its delay"

    # Workers per queue come from a broadcast; the rest from the database and the broker.
    assert value(after, "bulkgen_workers_online", queue="wan_local") == 1
    assert value(after, "bulkgen_workers_online", queue="control") == 1
    assert value(after, "bulkgen_workers_online", queue="sam3") == 0
    assert value(after, "bulkgen_runway_spend_usd_today") == 0
    assert value(after, "bulkgen_database_up") == 1 and value(after, "bulkgen_broker_up") == 1
    assert [k for k in after if k[0] == "bulkgen_metrics_errors"] == [], "every family was computed"
    assert value(after, "bulkgen_jobs", status="succeeded") >= 1
    assert value(after, "bulkgen_webhook_deliveries", status="failed") == 0  # no job here has a webhook
    assert value(after, "bulkgen_webhook_oldest_due_seconds") == 0
    assert value(after, "bulkgen_item_retries_total", 0.0, provider="echo") == retries_before
    assert value(after, "bulkgen_queue_paused", queue="wan_local") == 0

    # A retryable failure on the first attempt counts as one retry.
    flaky = api.submit(api.upload(distinct_pngs(1, seed=72)), params={"fail": "first_attempt"})
    assert api.wait(flaky["id"], timeout=60)["status"] == "succeeded"
    final = scrape(observed, METRICS_AUTH)
    assert value(final, "bulkgen_item_retries_total", provider="echo") == retries_before + 1
