"""The one list of labelloop's services, and what serve, replay and the migrations take from it.

Three layers: the core (``labelloop/`` but this module and the CLI) names no service; each
service (``services/<name>/``) builds on the core and ``schemas/`` and imports no other
service; this module composes them (``tests/unit/test_layers.py`` checks all three). Adding a
service is one entry in :data:`SERVICES`.

An entry names the modules of a service's parts, imported only when asked for: a pod running
one service imports that service's app alone (and its dependencies), a replay only the
projections, the migrations only the models.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the registry loads nothing: each part is imported when asked for
    from labelloop.projections import Projection
    from labelloop.runtime import Service


@dataclass(frozen=True)
class ServiceEntry:
    """One service: its name (``labelloop serve --service NAME``) and where its parts are."""

    name: str
    app: str
    """Module of the :class:`~labelloop.runtime.Service`: identity, subscribers, router,
    ``register``."""
    projection: str
    """Module whose ``PROJECTION`` applies the rows its events determine (live and replay)."""
    models: str | None
    """Module declaring its tables (None: the core's modules declare them)."""

    def load(self) -> Service:
        module: Service = importlib.import_module(self.app)
        return module

    def load_projection(self) -> Projection:
        projection: Projection = importlib.import_module(self.projection).PROJECTION
        return projection


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("api", app="labelloop.api.service", projection="labelloop.tasks", models=None),
    ServiceEntry(
        "ingest", app="ingest.app", projection="ingest.projections", models="ingest.models"
    ),
    ServiceEntry(
        "jobgen", app="jobgen.app", projection="jobgen.projections", models="jobgen.models"
    ),
    ServiceEntry(
        "webhooks", app="webhooks.app", projection="webhooks.projections", models="webhooks.models"
    ),
    ServiceEntry(
        "labeler-assist",
        app="labeler_assist.app",
        projection="labeler_assist.projections",
        models="labeler_assist.models",
    ),
    ServiceEntry(
        "trainer", app="trainer.app", projection="trainer.projections", models="trainer.models"
    ),
)
"""Every service, in the order one process registers them."""


def service_names() -> list[str]:
    return [entry.name for entry in SERVICES]


def entry(name: str) -> ServiceEntry:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown service {name!r} (known: {', '.join(service_names())})")


def load_service(name: str) -> Service:
    """The named service's app module (imports it and what it needs, nothing else)."""
    return entry(name).load()


def projections() -> list[Projection]:
    """Every service's projection: what ``labelloop replay`` applies."""
    return [candidate.load_projection() for candidate in SERVICES]


def model_modules() -> list[str]:
    """The services' modules that declare tables (the migrations add the core's)."""
    return [candidate.models for candidate in SERVICES if candidate.models is not None]
