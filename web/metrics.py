"""Prometheus metrics at /metrics, computed at scrape time from Postgres and the broker.

Nothing is counted in process memory: gunicorn runs several processes and any of them may answer a
scrape, so every value comes from the record (Postgres) or the broker when Prometheus asks. Series:

| series | type | from |
|---|---|---|
| `bulkgen_items{provider,status}` | gauge | jobs' per-status counters (kept exact with every item change) |
| `bulkgen_jobs{status}` | gauge | jobs by status |
| `bulkgen_queue_depth{queue}` | gauge | messages waiting in the broker, every priority level |
| `bulkgen_workers_online{queue}` | gauge | workers answering a control broadcast, per queue they consume |
| `bulkgen_reports_waiting` | gauge | workers' state reports not yet applied (the control side's lag) |
| `bulkgen_oldest_queued_item_age_seconds{queue}` | gauge | age of the longest-waiting item (pending or queued) |
| `bulkgen_items_pending{queue}` | gauge | items waiting in Postgres for a place in the queue's window |
| `bulkgen_queue_paused{queue}` | gauge | 1 while a queue is paused for maintenance |
| `bulkgen_item_duration_seconds{provider,model}` | histogram | `items.duration_ms` of every succeeded item |
| `bulkgen_item_retries_total{provider}` | counter | sum of (attempt - 1) over items |
| `bulkgen_runway_spend_usd_today` | gauge | Runway spend since midnight UTC (finished + in flight) |
| `bulkgen_runway_daily_cap_usd` | gauge | the configured cap, when there is one |
| `bulkgen_database_up`, `bulkgen_broker_up` | gauge | whether the scrape could read them |
| `bulkgen_metrics_errors{family}` | gauge | 1 for each family that failed in this scrape (it is left out) |

The duration histogram covers all succeeded items, not a recent window: that keeps `_bucket`,
`_count` and `_sum` monotonic, so `rate()` / `increase()` and `histogram_quantile()` over any range
work the way Prometheus expects. Its cost is one aggregate over succeeded items per scrape, which
Postgres answers from the (status, updated_at) index in well under a second for millions of rows.

Access: open when METRICS_PUBLIC=1; otherwise `Authorization: Bearer <API token>` or basic auth
matching METRICS_BASIC_AUTH (`user:password`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from sqlalchemy import case, func, select, text

from app.config import QUEUES, settings
from app.db import db
from app.models import ITEM_STATUSES, JOB_STATUSES, Item, Job, WebhookDelivery, utcnow

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

# Seconds: from a quick diagnostic item to an hour-long video.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class BulkgenCollector:
    """Reads everything at collect() time; must run inside a Flask app context."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        failed: list[str] = []
        database_up = 1.0
        try:
            db.session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
            log.warning("metrics: database unavailable: %s", exc)
            database_up = 0.0
        finally:
            db.session.rollback()
        if database_up:
            for build in (
                self._items,
                self._jobs,
                self._retries,
                self._durations,
                self._oldest_queued,
                self._scheduler,
                self._runway,
                self._webhooks,
            ):
                # One family's failure must not hide the others; each is complete or absent.
                try:
                    yield from build()
                except Exception as exc:  # noqa: BLE001
                    log.warning("metrics: %s failed: %s", build.__name__, exc)
                    failed.append(build.__name__.lstrip("_"))
                finally:
                    db.session.rollback()
        broker_up = 1.0
        try:
            yield from self._from_broker()
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: broker unavailable: %s", exc)
            broker_up = 0.0
        yield _gauge("bulkgen_database_up", "1 if the database answered this scrape", database_up)
        yield _gauge("bulkgen_broker_up", "1 if the broker answered this scrape", broker_up)
        errors = GaugeMetricFamily(
            "bulkgen_metrics_errors", "metric families that failed in this scrape", labels=["family"]
        )
        for name in failed:
            errors.add_metric([name], 1.0)
        yield errors
        yield _gauge(
            "bulkgen_scrape_duration_seconds",
            "time spent computing these metrics",
            time.monotonic() - started,
        )

    # --- Postgres --------------------------------------------------------------------------------------

    def _items(self) -> list[Metric]:
        cols = [func.coalesce(func.sum(getattr(Job, f"n_{s}")), 0) for s in ITEM_STATUSES]
        rows = db.session.execute(select(Job.provider, *cols).group_by(Job.provider)).all()
        family = GaugeMetricFamily(
            "bulkgen_items", "items by provider and status", labels=["provider", "status"]
        )
        for provider, *counts in rows:
            for status, count in zip(ITEM_STATUSES, counts, strict=True):
                family.add_metric([provider, status], float(count))
        return [family]

    def _jobs(self) -> list[Metric]:
        counts = dict(db.session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        family = GaugeMetricFamily("bulkgen_jobs", "jobs by status", labels=["status"])
        for status in JOB_STATUSES:
            family.add_metric([status], float(counts.get(status, 0)))
        return [family]

    def _webhooks(self) -> list[Metric]:
        # Pending and failed only: delivered rows pile up with every job and are not worth a count.
        counts = dict(
            db.session.execute(
                select(WebhookDelivery.status, func.count())
                .where(WebhookDelivery.status.in_(("pending", "failed")))
                .group_by(WebhookDelivery.status)
            ).all()
        )
        family = GaugeMetricFamily(
            "bulkgen_webhook_deliveries",
            "webhook deliveries waiting to be sent, and given up",
            labels=["status"],
        )
        for status in ("pending", "failed"):
            family.add_metric([status], float(counts.get(status, 0)))
        now = utcnow()
        oldest = db.session.scalar(
            select(func.min(WebhookDelivery.next_attempt_at)).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now
            )
        )
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        behind = (now - oldest).total_seconds() if oldest is not None else 0.0
        return [
            family,
            _gauge(
                "bulkgen_webhook_oldest_due_seconds",
                "how long the most overdue webhook delivery has been due (the sender's lag)",
                max(0.0, behind),
            ),
        ]

    def _retries(self) -> list[Metric]:
        rows = db.session.execute(
            select(Item.provider, func.coalesce(func.sum(Item.attempt - 1), 0)).group_by(Item.provider)
        ).all()
        family = CounterMetricFamily(
            "bulkgen_item_retries",
            "attempts beyond the first (retryable failures, lost workers, manual retries)",
            labels=["provider"],
        )
        for provider, retries in rows:
            family.add_metric([provider], float(retries))
        return [family]

    def _durations(self) -> list[Metric]:
        seconds = Item.duration_ms / 1000.0
        buckets = [func.sum(case((seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        rows = db.session.execute(
            select(Item.provider, Job.model, func.count(), func.coalesce(func.sum(seconds), 0.0), *buckets)
            .join(Job, Job.id == Item.job_id)
            .where(Item.status == "succeeded", Item.duration_ms.is_not(None))
            .group_by(Item.provider, Job.model)
        ).all()
        family = HistogramMetricFamily(
            "bulkgen_item_duration_seconds",
            "time from lease to manifest of succeeded items",
            labels=["provider", "model"],
        )
        for provider, model, count, total, *cumulative in rows:
            points = [(_le(b), float(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
            points.append(("+Inf", float(count)))
            family.add_metric([provider, model], points, float(total))
        return [family]

    def _oldest_queued(self) -> list[Metric]:
        rows = dict(
            db.session.execute(
                select(Item.queue, func.min(Item.updated_at))
                .where(Item.status.in_(("pending", "queued")))
                .group_by(Item.queue)
            ).all()
        )
        now = datetime.now(UTC)
        family = GaugeMetricFamily(
            "bulkgen_oldest_queued_item_age_seconds",
            "how long the longest-waiting queued item has waited (0: none waits)",
            labels=["queue"],
        )
        for queue in QUEUES:
            oldest = rows.get(queue)
            age = 0.0
            if oldest is not None:
                oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
                age = max(0.0, (now - oldest).total_seconds())
            family.add_metric([queue], age)
        return [family]

    def _scheduler(self) -> list[Metric]:
        from app.services.scheduler import paused_queues, pending_by_queue

        pending = pending_by_queue()
        paused = paused_queues()
        waiting = GaugeMetricFamily(
            "bulkgen_items_pending", "items waiting in Postgres for the queue's window", labels=["queue"]
        )
        stopped = GaugeMetricFamily("bulkgen_queue_paused", "1 while the queue is paused", labels=["queue"])
        for queue in QUEUES:
            waiting.add_metric([queue], float(pending.get(queue, 0)))
            stopped.add_metric([queue], 1.0 if queue in paused else 0.0)
        return [waiting, stopped]

    def _runway(self) -> list[Metric]:
        from app.services.policy import spent_today

        out = [
            _gauge(
                "bulkgen_runway_spend_usd_today",
                "Runway spend since midnight UTC: finished items' cost plus in-flight estimates",
                spent_today(),
            )
        ]
        cap = settings().daily_spend_cap_usd
        if cap is not None:
            out.append(_gauge("bulkgen_runway_daily_cap_usd", "the daily Runway spending cap", cap))
        return out

    # --- broker ----------------------------------------------------------------------------------------

    def _from_broker(self) -> Iterator[Metric]:
        from app.services.queues import online_workers, queue_depths, reports_waiting

        depths = queue_depths()
        if any(v is None for v in depths.values()):
            raise ConnectionError("queue lengths unavailable")
        depth = GaugeMetricFamily("bulkgen_queue_depth", "messages waiting in the broker", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], float(depths[queue] or 0))
        workers = online_workers()
        online = GaugeMetricFamily(
            "bulkgen_workers_online", "workers answering a broadcast, per queue", labels=["queue"]
        )
        for queue in QUEUES:
            online.add_metric([queue], float(sum(1 for qs in workers.values() if queue in qs)))
        yield depth
        yield online
        yield _gauge(
            "bulkgen_reports_waiting",
            "workers' state reports not yet applied to the database",
            float(reports_waiting() or 0),
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _le(bound: float) -> str:
    return str(float(bound))


# --- access ------------------------------------------------------------------------------------------


def _allowed() -> bool:
    s = settings()
    if s.metrics_public:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic" and s.metrics_basic_auth and credentials:
        try:
            given = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, s.metrics_basic_auth.encode())
    if scheme.lower() == "bearer" and credentials:
        from app.services.users import user_for_token

        try:
            return user_for_token(credentials) is not None
        finally:
            db.session.rollback()
    return False


@bp.get("/metrics")
def metrics() -> Response:
    if not _allowed():
        response = Response("metrics need a bearer token or basic auth\n", 401, mimetype="text/plain")
        if settings().metrics_basic_auth:
            response.headers["WWW-Authenticate"] = 'Basic realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BulkgenCollector())  # type: ignore[arg-type]
    # The text format Prometheus asks for (OpenMetrics when its Accept header prefers it).
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    response = Response(encoder(registry), mimetype=None)
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response
