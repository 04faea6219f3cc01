"""One settings object for every service, read from ``LABELLOOP_*`` environment variables.

Services build it once through :func:`get_settings`; nothing else reads the environment but
the fault tests' crash points (:mod:`labelloop.faults`), a test hook rather than configuration.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topic

Port = Annotated[int, Field(ge=1, le=65535)]

LOCAL_S3_ACCESS = "minioadmin"
LOCAL_S3_SECRET = "minioadmin"  # noqa: S105 - MinIO's documented local default
MIN_ADMIN_TOKEN_CHARS = 32
LOCAL_ADMIN_TOKEN = "labelloop-local-admin"  # noqa: S105 - refused outside `local`


def _is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class Settings(BaseSettings):
    """Every knob of labelloop; each field is overridable by ``LABELLOOP_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="LABELLOOP_", env_file=".env", extra="ignore", validate_default=True
    )

    environment: Literal["local", "cluster"] = "local"
    """``cluster`` refuses the local default secrets, so a deployment cannot forget them."""

    # --- where state lives -------------------------------------------------------------------
    var_dir: Path = Path("var")
    """Logs, data and pid files of the local stack, and the default SQLite database."""
    cache_dir: Path = Path.home() / ".cache" / "labelloop"
    """Downloaded and built tools (Kafka jars, MinIO binary, Triton venv): kept across clones."""
    database_url: str = "sqlite:///var/labelloop.db"

    # --- Kafka ----------------------------------------------------------------------------------
    kafka_host: str = "127.0.0.1"
    kafka_port: Port = 9092
    kafka_controller_port: Port = 9093
    kafka_version: str = "4.1.1"
    kafka_bootstrap_servers: str = ""
    """Defaults to ``kafka_host:kafka_port``; a cluster sets its own list."""
    kafka_topic_prefix: str = ""
    """Prepended to every topic name, so tests and tenants can share one broker."""
    kafka_group_prefix: str = ""
    """Prepended to every consumer group id: two deployments that read the same topic (say one
    object store's notifications) each need their own groups to see every record."""
    kafka_storage_topic: str = ""
    """Where the object store publishes its notifications (MinIO's notify_kafka topic);
    defaults to the prefixed ``storage.objects``. Set it when the store is shared."""
    kafka_partitions: Annotated[int, Field(ge=1)] = 3
    kafka_replication_factor: Annotated[int, Field(ge=1)] = 1
    """Copies of each topic ``labelloop topics`` creates (1 locally; 3 on a usual cluster)."""
    kafka_heap: str = "512m"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How every Kafka client reaches the brokers (the local stack: PLAINTEXT on loopback). A
    cluster needs the clients to prove who they are (SASL, or SSL with a client certificate):
    anyone who can write to the topics can forge events the webhooks service signs."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    """PEM file of the CAs the brokers' certificates are checked against; the system's CAs when
    empty. Host names are always checked."""
    kafka_ssl_certfile: str = ""
    """Client certificate (PEM) for SSL client authentication (mutual TLS); with its keyfile."""
    kafka_ssl_keyfile: str = ""
    kafka_allow_unauthenticated: bool = False
    """Outside local use the settings refuse Kafka clients that authenticate nothing (PLAINTEXT,
    or SSL without a client certificate); this says the operator restricts the listener some
    other way (NetworkPolicies on the broker's side) and accepts the risk."""

    # --- S3 / MinIO -----------------------------------------------------------------------------
    s3_host: str = "127.0.0.1"
    s3_port: Port = 9000
    s3_console_port: Port = 9001
    s3_endpoint: str = ""
    """``host:port`` of the S3 API; defaults to ``s3_host:s3_port``."""
    s3_secure: bool = False
    s3_access_key: str = LOCAL_S3_ACCESS
    s3_secret_key: str = LOCAL_S3_SECRET
    s3_bucket: str = "labelloop"
    s3_region: str = "us-east-1"
    """The bucket's region, which requests are signed for (MinIO's and versitygw's default)."""
    minio_module_version: str = "v0.0.0-20260212201848-7aac2a2c5b7c"
    """The Go pseudo-version ``go install github.com/minio/minio@latest`` resolved to (pinned)."""
    versitygw_module_version: str = "v1.8.0"
    stack_s3: Literal["minio", "versitygw"] = "minio"
    """The S3 server ``labelloop stack up`` runs: MinIO (pinned; unmaintained upstream since
    2026-02) or versitygw (maintained, posix backend)."""
    s3_event_key_encoding: Literal["url", "raw"] | None = None
    """How the object store writes keys in its event records: ``url`` (MinIO, AWS) or ``raw``
    (versitygw); by default what ``stack_s3`` names sends."""

    # --- Triton ---------------------------------------------------------------------------------
    triton_host: str = "127.0.0.1"
    triton_http_port: Port = 8000
    triton_grpc_port: Port = 8001
    triton_metrics_port: Port = 8002
    triton_pytriton_version: str = "0.7.0"
    triton_enabled: bool = True
    """Serve models through Triton; onnxruntime in process when off or unreachable."""

    # --- API ------------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    admin_token: str = LOCAL_ADMIN_TOKEN
    sse_max_streams: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Event streams (`GET /api/tasks/{id}/events`, SSE) one API process serves at once."""
    sse_max_streams_per_token: Annotated[int, Field(ge=1, le=10_000)] = 16
    """Event streams one token holds at once; more answer 429 with `Retry-After`."""
    sse_max_life_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    """A stream ends after this long; clients resume where they were with `Last-Event-ID`."""
    sse_recheck_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    """How often a stream checks its token again: a revoked token's stream ends this soon."""
    api_max_body_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 8 * 1024 * 1024
    """Largest request body the API reads (413 beyond it, chunked bodies included); a body is
    read only after its bearer token is known."""

    # --- ingest ---------------------------------------------------------------------------------
    ingest_max_frame_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    ingest_max_frame_pixels: Annotated[int, Field(gt=0)] = 50_000_000
    """Frames with more pixels are refused from their header, before decoding (bombs)."""
    ingest_batch_max_records: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Storage notifications ingest takes in one call: their frames are fetched side by side,
    each chunk of four times ``ingest_fetch_concurrency`` recorded (one transaction per task) while
    the next is fetched; offsets are committed after the last."""
    ingest_fetch_concurrency: Annotated[int, Field(ge=1, le=256)] = 32
    """Frames fetched at once, on the event loop, and the store connections kept open."""
    ingest_fetch_budget_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024
    """Bytes the frames in flight may hold together, by their announced sizes (a frame larger
    than this is fetched alone)."""
    ingest_decode_threads: Annotated[int, Field(ge=1, le=64)] = 2
    """Threads decoding and hashing fetched frames (Pillow and hashlib release the GIL: one a
    core)."""
    ingest_reconcile: bool = True
    """List incomplete tasks' prefixes to recover objects whose notification was lost."""
    ingest_reconcile_quiet_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """An incomplete task is listed once nothing has arrived for it for this long."""
    ingest_reconcile_max_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    """Listings that find nothing back off (doubling from the quiet period) up to this."""
    ingest_reconcile_horizon_s: Annotated[float, Field(gt=0)] = 86_400.0
    """Tasks created longer ago than this are no longer listed (abandoned uploads)."""
    ingest_reconcile_tick_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How often the reconciler looks for incomplete tasks (one query over the tasks of its
    horizon, by the `tasks.created_at` index)."""

    # --- webhooks -------------------------------------------------------------------------------
    webhook_allowlist: str = ""
    """Comma-separated CIDRs admitted as webhook targets although private or loopback."""
    webhook_retry_base_s: Annotated[float, Field(gt=0)] = 5.0
    """First retry delay; each next one doubles (with jitter)."""
    webhook_max_attempts: Annotated[int, Field(ge=1)] = 8
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    webhook_max_in_flight: Annotated[int, Field(ge=1)] = 64
    """Deliveries sent at once in all; each subscription has at most one in flight."""

    # --- trainer --------------------------------------------------------------------------------
    trainer_aging_s: Annotated[float, Field(gt=0)] = 600.0
    """A queued run gains one priority level per this many seconds waited (P3 → P0 in 30 min)."""
    trainer_max_concurrent_runs: Annotated[int, Field(ge=1)] = 1
    trainer_preemption: Literal["conservative", "aggressive"] = "conservative"
    """``aggressive``: checkpoint a running run for a queued one of higher declared priority."""
    trainer_max_attempts: Annotated[int, Field(ge=1)] = 2
    """A run whose trainer died is retried until this many attempts, then reported failed."""
    trainer_epochs: Annotated[int, Field(ge=1)] = 30
    trainer_warm_epochs: Annotated[int, Field(ge=1)] = 15
    """Epochs of a run warm-started from the task's current model."""
    model_imgsz: Annotated[int, Field(ge=32, multiple_of=32)] = 192
    """Square input size models are trained, exported and served at."""
    serve_conf: Annotated[float, Field(gt=0, lt=1)] = 0.25
    """The confidence pre-annotations are served at: models are gated on recall/precision here."""
    serve_iou: Annotated[float, Field(gt=0, lt=1)] = 0.7
    """NMS IoU threshold, Ultralytics' default."""
    assist_score_floor: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Models detect down to this confidence: pre-annotations show the boxes from
    ``serve_conf`` up, the ranking of frames and the label checks weigh the fainter ones too."""
    assist_issue_conf: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """How sure a model must be to call a label wrong (a detection's score, or 1 minus the best
    score near a label no detection supports)."""
    assist_ranked_top: Annotated[int, Field(ge=1, le=500)] = 50
    """Frames a ``frames.ranked`` event lists (the top of the ranking)."""
    export_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 8 * 1024**3
    """Largest dataset export (images and annotations): the api writes it to a temporary file
    before sending it, and `labelloop export` unpacks no more than this."""
    label_studio_urls: str = ""
    """Comma-separated Label Studio origins (``http://ls.example:8080``) that may connect
    labelloop as their ML backend; the backend calls no other address. Empty: none may."""
    label_studio_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Each call to Label Studio's API (its task list, an annotation, an image, predictions)."""
    label_studio_label_threshold: Annotated[int, Field(ge=1, le=100_000)] = 10
    """The label threshold of a task made for a connected Label Studio project."""
    label_studio_segment_size: Annotated[int, Field(ge=0, le=500)] = 100
    """Frames per job of a task made for a connected Label Studio project (0: one job)."""
    trainer_min_recall: Annotated[float, Field(ge=0, le=1)] = 0.5
    trainer_min_precision: Annotated[float, Field(ge=0, le=1)] = 0.5
    trainer_gpu_min_free_mib: Annotated[int, Field(ge=0)] = 2048
    trainer_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """How often a trainer renews the lease on the runs it trains (and looks for orphans)."""
    trainer_lease_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """A running run whose trainer has not renewed it for this long is an orphan: any trainer
    requeues it (it resumes from its last checkpoint). At least three heartbeats."""
    trainer_checkpoint_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    """A run keeps its last epoch in the object store at most this often (0: after every
    epoch), so a run whose trainer is killed resumes there on another trainer."""
    trainer_preempt_grace_s: Annotated[float, Field(ge=0, le=3600)] = 3.0
    """Aggressive preemption stops a run only for one that has waited this long: time for an
    idle trainer anywhere to claim it first (several trainers share one queue)."""

    # --- messaging behaviour --------------------------------------------------------------------
    handler_max_attempts: Annotated[int, Field(ge=1)] = 3
    """A handler that raises is retried this many times before its message goes to the DLQ."""
    transient_retry_s: Annotated[float, Field(gt=0)] = 1.0
    """Pause before a message whose handler hit an unreachable dependency is consumed again."""
    consumer_batch_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Most messages a consumer applies in one call (what one poll holds, up to this)."""
    consumer_batch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 20
    """A batch consumer's wait on an empty poll: the most a record arriving while idle waits."""
    outbox_poll_s: Annotated[float, Field(gt=0)] = 0.5
    """How often the outbox relay looks for events left by a crashed process."""
    event_max_bytes: Annotated[int, Field(ge=16_384, le=100 * 1024 * 1024)] = 1_000_000
    """Largest event body recorded; a bigger one is refused where it is made (413 for a
    request). Keep it under the broker's ``max.message.bytes`` (Kafka's default 1,048,588) less
    the key and headers (the producer's ``max_request_size`` is 1 MiB)."""
    lag_interval_s: Annotated[float, Field(gt=0)] = 15.0
    """How often each process refreshes ``labelloop_consumer_lag`` for its consumer groups."""

    # --- stack behaviour ------------------------------------------------------------------------
    stack_start_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _derive_addresses(self) -> Settings:
        if not self.kafka_bootstrap_servers:
            self.kafka_bootstrap_servers = f"{self.kafka_host}:{self.kafka_port}"
        if not self.s3_endpoint:
            self.s3_endpoint = f"{self.s3_host}:{self.s3_port}"
        if self.s3_event_key_encoding is None:
            self.s3_event_key_encoding = "raw" if self.stack_s3 == "versitygw" else "url"
        if self.environment == "local" and not _is_loopback(self.api_host):
            raise ValueError(
                f"LABELLOOP_API_HOST={self.api_host} serves other machines, but local settings "
                "hold a known admin token and MinIO's default keys: bind 127.0.0.1, or set "
                "LABELLOOP_ENVIRONMENT=cluster with real secrets"
            )
        if self.environment != "local":
            defaults = [
                name
                for name, value, default in (
                    ("LABELLOOP_S3_ACCESS_KEY", self.s3_access_key, LOCAL_S3_ACCESS),
                    ("LABELLOOP_S3_SECRET_KEY", self.s3_secret_key, LOCAL_S3_SECRET),
                    ("LABELLOOP_ADMIN_TOKEN", self.admin_token, LOCAL_ADMIN_TOKEN),
                )
                if value == default
            ]
            if defaults:
                raise ValueError(f"set real secrets outside local use: {', '.join(defaults)}")
            if len(self.admin_token) < MIN_ADMIN_TOKEN_CHARS:
                raise ValueError(
                    f"LABELLOOP_ADMIN_TOKEN has {len(self.admin_token)} characters; outside local "
                    f"use it needs at least {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
                )
        if self.trainer_lease_s < 3 * self.trainer_heartbeat_s:
            raise ValueError(
                f"LABELLOOP_TRAINER_LEASE_S={self.trainer_lease_s} is under three heartbeats "
                f"(LABELLOOP_TRAINER_HEARTBEAT_S={self.trainer_heartbeat_s}): a live trainer's "
                "runs would be taken from it"
            )
        if self.assist_score_floor > self.serve_conf:
            raise ValueError(
                f"LABELLOOP_ASSIST_SCORE_FLOOR={self.assist_score_floor} is above "
                f"LABELLOOP_SERVE_CONF={self.serve_conf}: served boxes would go missing"
            )
        self._check_kafka_security()
        return self

    def _check_kafka_security(self) -> None:
        """Refuse Kafka security settings that are half given, or that send or accept nothing
        secret in a cluster: a client would otherwise connect with less than was meant."""
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        tls = protocol.endswith("SSL")
        password = self.kafka_sasl_password.get_secret_value()
        if sasl and not (self.kafka_sasl_username and password):
            raise ValueError(
                f"LABELLOOP_KAFKA_SECURITY_PROTOCOL={protocol} needs LABELLOOP_KAFKA_SASL_USERNAME "
                "and LABELLOOP_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username or password):
            raise ValueError(
                "LABELLOOP_KAFKA_SASL_USERNAME/PASSWORD are given but "
                f"LABELLOOP_KAFKA_SECURITY_PROTOCOL={protocol} sends no SASL credentials: "
                "use SASL_SSL"
            )
        files = {
            "LABELLOOP_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "LABELLOOP_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "LABELLOOP_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        given = [name for name, value in files.items() if value]
        if given and not tls:
            raise ValueError(
                f"{', '.join(given)} given but LABELLOOP_KAFKA_SECURITY_PROTOCOL={protocol} "
                "uses no TLS: use SSL or SASL_SSL"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                "LABELLOOP_KAFKA_SSL_CERTFILE and LABELLOOP_KAFKA_SSL_KEYFILE go together"
            )
        if self.environment == "local":
            return
        if sasl and not tls and self.kafka_sasl_mechanism == "PLAIN":
            raise ValueError(
                "SASL PLAIN over SASL_PLAINTEXT sends the Kafka password in clear: use SASL_SSL "
                "(or a SCRAM mechanism)"
            )
        authenticated = sasl or bool(self.kafka_ssl_certfile)
        if not authenticated and not self.kafka_allow_unauthenticated:
            raise ValueError(
                f"LABELLOOP_KAFKA_SECURITY_PROTOCOL={protocol} authenticates no client, so "
                "anyone who reaches the brokers can forge labelloop's events: use SASL_SSL "
                "(or SSL with a client certificate), or set "
                "LABELLOOP_KAFKA_ALLOW_UNAUTHENTICATED=true where the broker is restricted "
                "otherwise"
            )

    def topic(self, name: str) -> str:
        """The broker-side name of a logical topic (``storage.objects`` → prefixed name)."""
        if name == Topic.STORAGE_OBJECTS and self.kafka_storage_topic:
            return self.kafka_storage_topic
        return f"{self.kafka_topic_prefix}{name}"

    def consumer_group(self, name: str) -> str:
        """The broker-side id of a service's consumer group."""
        return f"{self.kafka_group_prefix}{name}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``LABELLOOP_*`` variables, for a child process to rebuild them."""
        values = self.model_dump(mode="json")
        values["kafka_sasl_password"] = self.kafka_sasl_password.get_secret_value()
        return {
            f"LABELLOOP_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in values.items()
        }

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return f"{self.triton_host}:{self.triton_http_port}"

    @property
    def trainer_work_dir(self) -> Path:
        """Datasets and checkpoints of training runs (the registry keeps what matters)."""
        return self.var_dir / "trainer"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once on first use."""
    return Settings()
