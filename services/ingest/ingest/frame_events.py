"""What ingest announces about a frame: ``frame.processed`` or ``frame.rejected``, built here.

A frame is rejected when it is inspected (not an image, too large, outside its task...) or
later, when the manifest that arrives after it declares another hash: both are the same event,
keyed by task and frame, so a frame has one outcome whichever way it was refused.
"""

from __future__ import annotations

from ingest import IDENTITY
from ingest.domain import ImageInfo, Rejection
from schemas.events import FrameProcessed, FrameProcessedData, FrameRejected, FrameRejectedData


def frame_processed(
    task_id: str, frame: str, object_key: str, info: ImageInfo, sha256: str, size: int
) -> FrameProcessed:
    """The frame decoded as ``info``, with the sha256 and size of the bytes that did."""
    return FrameProcessed.create(
        FrameProcessedData(
            task_id=task_id,
            frame=frame,
            object_key=object_key,
            sha256=sha256,
            width=info.width,
            height=info.height,
            size_bytes=size,
            format=info.format,
        ),
        source=IDENTITY.source,
        key=(task_id, frame),
        taskid=task_id,
    )


def frame_rejected(
    task_id: str, frame: str, object_key: str, rejection: Rejection
) -> FrameRejected:
    """The frame cannot be used, and why."""
    return FrameRejected.create(
        FrameRejectedData(
            task_id=task_id,
            frame=frame,
            object_key=object_key,
            code=rejection.code,
            reason=rejection.reason,
        ),
        source=IDENTITY.source,
        key=(task_id, frame),
        taskid=task_id,
    )
