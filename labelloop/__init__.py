"""labelloop: an event-driven backend for image annotation with a model in the loop.

This package is the common core that every service shares: settings, messaging (broker, DLQ,
outbox, idempotency), the database, object storage, the local stack and the command line.
Services live under ``services/<name>/`` and share only this core and ``schemas``.
"""

__version__ = "0.1.0"
