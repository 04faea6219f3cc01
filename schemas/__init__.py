"""labelloop's public contracts: topics, event types, the CloudEvents envelope, S3 records.

Producers and consumers import these models; nobody copies them. ``labelloop schemas export``
writes the JSON Schemas and the AsyncAPI document under ``schemas/generated/`` and a test fails
when the committed files drift from the code.
"""

from schemas.envelope import CloudEvent, event_id
from schemas.events import (
    EVENT_TYPES,
    EVENTS_BY_TOPIC,
    FrameProcessed,
    FrameRejected,
    JobCreated,
    LabelsSubmitted,
    LabelsThresholdReached,
    ModelPublished,
    ModelRejected,
    PreannotationReady,
    TaskDataReady,
    TaskFramesListed,
    TaskJobsReady,
    TrainingFailed,
    TrainingStarted,
)
from schemas.s3 import S3EventNotification, S3EventRecord
from schemas.topics import Topic, dlq_topic

__all__ = [
    "EVENTS_BY_TOPIC",
    "EVENT_TYPES",
    "CloudEvent",
    "FrameProcessed",
    "FrameRejected",
    "JobCreated",
    "LabelsSubmitted",
    "LabelsThresholdReached",
    "ModelPublished",
    "ModelRejected",
    "PreannotationReady",
    "S3EventNotification",
    "S3EventRecord",
    "TaskDataReady",
    "TaskFramesListed",
    "TaskJobsReady",
    "Topic",
    "TrainingFailed",
    "TrainingStarted",
    "dlq_topic",
    "event_id",
]
