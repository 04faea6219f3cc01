"""ingest: validates every uploaded frame and announces when a task's declared data is in."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("ingest")
