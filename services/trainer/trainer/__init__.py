"""trainer: retrains each task's detector from its labels, by priority, and registers versions."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("trainer")
