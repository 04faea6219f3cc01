"""Prometheus metrics, one registry per process, exposed at ``/metrics`` by every service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOK_ATTEMPTS = Counter(
    "labelloop_webhook_attempts_total", "Webhook delivery attempts by outcome.", ["outcome"]
)
WEBHOOK_FAILURES = Counter(
    "labelloop_webhook_failures_total", "Deliveries given up (failed for good)."
)
WEBHOOK_LATENCY = Histogram(
    "labelloop_webhook_latency_seconds", "Time a receiver took to answer one attempt."
)
FRAMES = Counter("labelloop_frames_total", "Frames ingested by outcome.", ["status"])
RECONCILE_LISTINGS = Counter(
    "labelloop_reconcile_listings_total",
    "Listings of incomplete tasks' prefixes by the reconciler, by outcome.",
    ["outcome"],
)
RECONCILE_RECOVERED = Counter(
    "labelloop_reconcile_objects_recovered_total",
    "Objects no notification brought, found by listing and ingested.",
)
RECONCILE_TASKS = Counter(
    "labelloop_reconcile_tasks_reconciled_total",
    "Tasks in which a listing recovered at least one object.",
)
RECONCILE_WATCHED = Gauge(
    "labelloop_reconcile_incomplete_tasks", "Incomplete tasks the reconciler is watching."
)
QUEUE_DEPTH = Gauge(
    "labelloop_training_queue_depth", "Queued training runs per priority.", ["priority"]
)
QUEUE_WAIT = Histogram(
    "labelloop_training_wait_seconds",
    "Label-threshold event to training started.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
RUN_DURATION = Histogram(
    "labelloop_training_run_seconds",
    "Training run wall time, end to end.",
    buckets=(30, 60, 120, 300, 600, 1200, 3600),
)
INFERENCE_LATENCY = Histogram(
    "labelloop_inference_seconds",
    "Pre-annotation of one batch, by backend.",
    ["backend"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_SET_ASIDE = Counter(
    "labelloop_outbox_set_aside_total",
    "Recorded events the broker refused for good (too large, corrupt): set aside, not sent.",
    ["topic"],
)
DEAD_LETTERS = Counter("labelloop_dead_letters_total", "Messages sent to a DLQ.", ["topic"])
CONSUMER_LAG = Gauge(
    "labelloop_consumer_lag",
    "Messages a consumer group has not yet committed, per topic (what KEDA scales on).",
    ["group", "topic"],
)
EPOCHS_PER_SECOND = Gauge(
    "labelloop_training_epochs_per_second",
    "Epochs per second of the last finished run (whole run: snapshot, train, evaluate, export).",
)
