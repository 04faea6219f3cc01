"""The HTTP API: one FastAPI app that mounts the routers of the services a process runs."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("api", group="labelloop-timeline")
"""The api service: the tasks it creates, and its timeline consumer (its group predates the
rule that derives groups from names)."""
