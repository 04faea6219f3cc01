"""Shared test set-up: every test run uses its own stack ports and var folder.

The integration stack listens on ports of its own (29xxx) and keeps its data under
``var/test-stack``, so a developer's ``make run`` stack and the tests never meet.
"""

from __future__ import annotations

import os

TEST_ENV = {
    "LABELLOOP_VAR_DIR": "var/test-stack",
    "LABELLOOP_KAFKA_PORT": "29092",
    "LABELLOOP_KAFKA_CONTROLLER_PORT": "29093",
    "LABELLOOP_S3_PORT": "29000",
    "LABELLOOP_S3_CONSOLE_PORT": "29001",
    "LABELLOOP_TRITON_HTTP_PORT": "28000",
    "LABELLOOP_TRITON_GRPC_PORT": "28001",
    "LABELLOOP_TRITON_METRICS_PORT": "28002",
    "LABELLOOP_DATABASE_URL": "sqlite:///var/test-stack/labelloop.db",
}
for _name, _value in TEST_ENV.items():
    os.environ.setdefault(_name, _value)
TEST_ENV_APP = {
    # the test receivers listen on loopback; production refuses such targets
    "LABELLOOP_WEBHOOK_ALLOWLIST": "127.0.0.0/8",
    "LABELLOOP_WEBHOOK_RETRY_BASE_S": "0.2",
    "LABELLOOP_WEBHOOK_MAX_ATTEMPTS": "4",
    "LABELLOOP_OUTBOX_POLL_S": "0.2",
    # a lost notification is recovered by listing within seconds, not the production default
    "LABELLOOP_INGEST_RECONCILE_QUIET_S": "2",
    "LABELLOOP_INGEST_RECONCILE_MAX_INTERVAL_S": "30",
}
for _name, _value in TEST_ENV_APP.items():
    os.environ.setdefault(_name, _value)
