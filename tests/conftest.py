"""Shared test set-up: every test run uses its own stack ports and var folder.

The integration stack listens on ports of its own and keeps its data under
``var/test-stack``, so a developer's ``make run`` stack and the tests never meet. The ports
are a block of a hundred chosen from the checkout's path (21000-28999, below the kernel's
ephemeral range): two checkouts on one machine (a developer's and CI's fresh clone) run
their suites without taking each other's servers for their own.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PORTS = 21_000 + zlib.crc32(str(CHECKOUT).encode()) % 80 * 100
"""The first port of this checkout's block."""

TEST_ENV = {
    "LABELLOOP_VAR_DIR": "var/test-stack",
    "LABELLOOP_S3_PORT": str(PORTS),
    "LABELLOOP_S3_CONSOLE_PORT": str(PORTS + 1),
    "LABELLOOP_TRITON_HTTP_PORT": str(PORTS + 10),
    "LABELLOOP_TRITON_GRPC_PORT": str(PORTS + 11),
    "LABELLOOP_TRITON_METRICS_PORT": str(PORTS + 12),
    "LABELLOOP_TEST_PG_PORT": str(PORTS + 32),
    "LABELLOOP_KAFKA_PORT": str(PORTS + 92),
    "LABELLOOP_KAFKA_CONTROLLER_PORT": str(PORTS + 93),
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
