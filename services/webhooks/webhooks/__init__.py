"""webhooks: delivers labelloop's events to subscribers, signed per Standard Webhooks."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("webhooks")
