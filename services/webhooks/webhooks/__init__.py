"""webhooks: delivers labelloop's events to subscribers, signed per Standard Webhooks."""
