"""Bringing the local stack up and down, idempotently, with health waits."""

from __future__ import annotations

import time
from dataclasses import asdict

from labelloop.config import Settings
from labelloop.stack.base import (
    Component,
    ComponentStatus,
    ObjectStoreComponent,
    Progress,
    StackError,
)
from labelloop.stack.kafka import KafkaComponent
from labelloop.stack.minio import MinioComponent
from labelloop.stack.versitygw import VersitygwComponent

OBJECT_STORES: dict[str, type[ObjectStoreComponent]] = {
    "minio": MinioComponent,
    "versitygw": VersitygwComponent,
}
"""The S3 servers the local stack can run (``LABELLOOP_STACK_S3``)."""


class Stack:
    """Kafka, then the S3 server (it publishes to Kafka), then Triton when asked for."""

    def __init__(self, settings: Settings, *, with_triton: bool = False) -> None:
        self.settings = settings
        self.s3: ObjectStoreComponent = OBJECT_STORES[settings.stack_s3](settings)
        self.components: list[Component] = [KafkaComponent(settings), self.s3]
        if with_triton:
            from labelloop.stack.triton import TritonComponent

            self.components.append(TritonComponent(settings))

    def up(self, progress: Progress, *, adopt_foreign: bool = True) -> list[ComponentStatus]:
        """Install, start and configure every component that is not healthy yet.

        A healthy server this stack did not start (no live pid in its pid file) is used as it
        is, unless ``adopt_foreign`` is False: the test stack stops and restarts its servers,
        which it cannot do to another checkout's, so it refuses them with the reason.
        """
        for component in self.components:
            if component.healthy():
                if not adopt_foreign and component.daemon.pid() is None:
                    raise StackError(
                        f"{component.name}: {component.address} answers, but this stack did not "
                        f"start it (no live process in {component.daemon.pidfile}); "
                        "stop the server that holds the port or give this stack other ports "
                        "(LABELLOOP_*_PORT)"
                    )
                progress(f"{component.name}: already running at {component.address}")
            else:
                component.install(progress)
                component.prepare(progress)
                if component.daemon.pid() is None:
                    progress(f"{component.name}: starting at {component.address}")
                    argv, env = component.command()
                    component.daemon.start(argv, env=env)
                self._wait_healthy(component, progress)
            component.after_start(progress)
        return self.status()

    def _wait_healthy(self, component: Component, progress: Progress) -> None:
        started = time.monotonic()
        deadline = started + self.settings.stack_start_timeout_s
        while time.monotonic() < deadline:
            if component.healthy():
                progress(f"{component.name}: healthy after {time.monotonic() - started:.1f}s")
                return
            if component.daemon.pid() is None:
                raise StackError(
                    f"{component.name} exited while starting; last lines of "
                    f"{component.daemon.logfile}:\n{component.daemon.log_tail()}"
                )
            time.sleep(0.25)
        raise StackError(
            f"{component.name} did not become healthy within "
            f"{self.settings.stack_start_timeout_s:.0f}s "
            f"(LABELLOOP_STACK_START_TIMEOUT_S); see {component.daemon.logfile}:\n"
            f"{component.daemon.log_tail()}"
        )

    def down(self, progress: Progress) -> None:
        """Stop what this stack started, in reverse order; data stays under var/."""
        for component in reversed(self.components):
            if component.daemon.stop():
                progress(f"{component.name}: stopped")
            else:
                progress(f"{component.name}: not running")

    def status(self) -> list[ComponentStatus]:
        return [component.status() for component in self.components]


def status_dicts(statuses: list[ComponentStatus]) -> list[dict[str, object]]:
    return [asdict(status) for status in statuses]
