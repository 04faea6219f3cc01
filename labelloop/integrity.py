"""Reading back what was checked: an object is used only if its bytes still hash to what was
recorded when it was validated (a frame, by ingest) or written (a model file, by the trainer).

Anyone holding a presigned URL, or the bucket's keys, can replace an object after the check;
the recorded hash travels in an event (``frame.processed``, ``model.published``,
``training.preempted``), which a bucket writer cannot forge, so a replaced object is refused.
"""

from __future__ import annotations

import hashlib

from minio.error import S3Error

from labelloop.storage import ObjectStore, ObjectTooLarge


class NotAsRecorded(Exception):
    """The object is not the one that was checked or written; ``reason`` says how."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(store: ObjectStore, key: str, sha256: str | None, *, max_bytes: int) -> bytes:
    """The object's bytes if they hash to ``sha256``, read no further than ``max_bytes``;
    :class:`NotAsRecorded` otherwise (no hash recorded, gone, too large, or other bytes)."""
    if sha256 is None:
        raise NotAsRecorded(key, "no hash was recorded when it was checked, so it is not used")
    try:
        data = store.get_bytes(key, max_bytes=max_bytes)
    except ObjectTooLarge:
        raise NotAsRecorded(
            key, f"it is now over {max_bytes:,} bytes: replaced since it was checked"
        ) from None
    except S3Error as error:
        if error.code in {"NoSuchKey", "NoSuchObject"}:
            raise NotAsRecorded(key, "the object is gone") from error
        raise
    found = sha256_of(data)
    if found != sha256:
        raise NotAsRecorded(
            key,
            f"its sha256 is {found[:12]}…, not the {sha256[:12]}… recorded when it was checked: "
            "it was replaced after that, and is not used",
        )
    return data
