"""Running services: in the foreground (a pod, or a developer) or as a local daemon.

The services come from the registry (:mod:`labelloop.composition`): one process registers the
named ones, or all of them.
"""

from __future__ import annotations

import os
import sys
import time

import httpx
import uvicorn
from fastapi import FastAPI

from labelloop.api.app import create_api
from labelloop.composition import load_service, service_names
from labelloop.config import Settings
from labelloop.messaging.lag import watch_lag
from labelloop.messaging.security import kafka_security_options
from labelloop.runtime import create_runtime
from labelloop.stack.base import Progress
from labelloop.stack.process import Daemon

SERVE_DAEMON = "labelloop-serve"


def build_app(settings: Settings, names: list[str]) -> FastAPI:
    """The app of the named services (every service when ``names`` is empty)."""
    selected = names or service_names()
    services = [load_service(name) for name in selected]
    runtime = create_runtime(settings, client_id="labelloop-" + "+".join(selected))
    for service in services:
        service.register(runtime)
    groups = {
        settings.consumer_group(service.IDENTITY.consumer_group): [
            settings.topic(topic) for topic in service.subscribers.topics
        ]
        for service in services
        if service.subscribers.topics
    }
    runtime.background.append(
        lambda: watch_lag(
            settings.kafka_bootstrap_servers,
            groups,
            settings.lag_interval_s,
            security=kafka_security_options(settings),
        )
    )
    routed = services
    if "api" in selected:
        # The api is a cluster's one entry point: it answers every service's routes (they need
        # only the database and the outbox), so a consumer scaled to zero still gets its
        # uploads, labels and subscriptions, and the work wakes it through Kafka lag.
        routed = [load_service(name) for name in service_names()]
    return create_api(runtime, services, routed)


def run_foreground(settings: Settings, names: list[str]) -> None:
    app = build_app(settings, names)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def serve_daemon(settings: Settings) -> Daemon:
    return Daemon(SERVE_DAEMON, settings.run_dir, settings.log_dir)


def run_detached(settings: Settings, names: list[str], progress: Progress) -> str:
    """Start ``labelloop serve`` in the background (idempotent) and wait for ``/readyz``."""
    address = f"{settings.api_host}:{settings.api_port}"
    daemon = serve_daemon(settings)
    if daemon.pid() is None:
        argv = [sys.executable, "-m", "labelloop", "serve"]
        for name in names:
            argv += ["--service", name]
        daemon.start(argv, env=dict(os.environ))
        progress(f"services starting at {address} (log: {daemon.logfile})")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.pid() is None:
            raise RuntimeError(f"labelloop serve exited:\n{daemon.log_tail()}")
        try:
            if httpx.get(f"http://{address}/readyz", timeout=2).status_code == 200:
                return address
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"labelloop serve not ready after 60s:\n{daemon.log_tail()}")
