"""Celery settings, from the environment through app.config.

Long GPU tasks on Redis need: late acks with reject-on-worker-lost (a killed
worker's item comes back), prefetch 1 (no work hidden behind a long task), a
visibility timeout longer than the longest task (the lease, not this, drives fast
recovery), explicit result expiry, and task events for Flower.
"""

from kombu import Exchange, Queue

from app.config import QUEUES, settings

_s = settings()

broker_url = _s.broker_url
result_backend = _s.result_backend
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": _s.visibility_timeout_s,
    # Priority on Redis: 0 is the highest; jobs use 0 (high), 3 (normal), 6 (low).
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
    "sep": ":",
    "socket_keepalive": True,
    "health_check_interval": 10,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}, "health_check_interval": 10}
result_expires = _s.result_expires_s
# Results are progress and a small outcome; the record is Postgres and the manifests.
result_extended = False

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True
task_acks_on_timeout = True
worker_prefetch_multiplier = 1
task_track_started = True
# Flower sees tasks from the workers' events; a "sent" event per publish would double the
# broker traffic of a 10,000-item dispatch.
task_send_sent_event = False
worker_send_task_events = True
worker_hijack_root_logger = False
worker_cancel_long_running_tasks_on_connection_loss = False
# kombu's own teardown of a lost Redis connection can end the worker: tasks/consumer.py.
worker_consumer = "tasks.consumer:Consumer"

task_default_queue = "control"
task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
# Provider items are published with an explicit queue (the provider declares it);
# everything in the control namespace goes to the control queue.
task_routes = {"control.*": {"queue": "control"}}
task_create_missing_queues = False
task_default_priority = 3
task_queue_max_priority = 10

timezone = "UTC"
enable_utc = True

# Periodic control work only; the report appliers, the window filler and the webhook sender run
# as threads of the control worker (tasks/control_loops.py), not as a task a second.
beat_schedule = {
    "reconcile": {
        "task": "control.reconcile",
        "schedule": _s.reconcile_interval_s,
        "options": {"expires": 60},
    },
    "retention": {
        "task": "control.retention",
        "schedule": _s.retention_interval_s,
        "options": {"expires": 600},
    },
}
beat_schedule_filename = str(_s.var_dir / "celerybeat-schedule")
