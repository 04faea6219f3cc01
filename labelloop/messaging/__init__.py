"""Messaging core shared by every service: broker, DLQ, outbox, idempotency, topics."""
