"""Who a service is, said once: the names Kafka, the outbox and the event log know it by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceIdentity:
    """A service's name, from which its consumer group, event source and consumer derive.

    ``group`` overrides the consumer group for a service whose group predates this rule (the
    api's timeline consumer); changing a group would make Kafka deliver from the start again.
    """

    name: str
    group: str | None = None

    @property
    def consumer_group(self) -> str:
        """The Kafka consumer group of its subscribers."""
        return self.group or f"labelloop-{self.name}"

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of the events it produces."""
        return f"/labelloop/{self.name}"

    @property
    def consumer(self) -> str:
        """Its name in the processed-message log (idempotency marks)."""
        return self.name
