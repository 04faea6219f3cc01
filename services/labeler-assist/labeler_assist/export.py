"""A task's dataset as labeler-assist holds it (frames, labels, pre-annotations), written in
one of the field's formats into a zip: images read one at a time, each checked against the
hash ingest recorded, so an export holds only the bytes that were labeled."""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from typing import IO, Any, Literal

from sqlmodel import Session, col, select

from labeler_assist.lookups import newest_by_frame
from labeler_assist.models import Annotation, AssistFrame, Preannotation
from labelloop.config import Settings
from labelloop.datasets import (
    Box,
    Dataset,
    DatasetFormat,
    Item,
    ZipSink,
    write_dataset,
)
from labelloop.datasets.files import file_names
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.storage import ObjectStore
from labelloop.tasks import Task

Part = Literal["labels", "preannotations"]
MANIFEST = "labelloop.json"
"""The export's own record: what it holds and what it left out, beside the format's files."""


class ExportTooLarge(Exception):
    """The export outgrew ``LABELLOOP_EXPORT_MAX_BYTES``."""


def task_dataset(
    session: Session, task: Task, include: Iterable[Part]
) -> tuple[Dataset, dict[str, AssistFrame]]:
    """The task's frames that have what ``include`` names: labeled frames with their labels,
    pre-annotated ones with each frame's newest model boxes (served from ``serve_conf`` up);
    and the stored frame of each item (where its bytes are, and their hash)."""
    parts = set(include)
    labels = (
        {
            row.frame: row
            for row in session.exec(select(Annotation).where(Annotation.task_id == task.id))
        }
        if "labels" in parts
        else {}
    )
    newest = (
        newest_by_frame(session.exec(select(Preannotation).where(Preannotation.task_id == task.id)))
        if "preannotations" in parts
        else {}
    )
    frames = [
        frame
        for frame in session.exec(
            select(AssistFrame)
            .where(AssistFrame.task_id == task.id)
            .order_by(col(AssistFrame.name))
        )
        if frame.name in labels or frame.name in newest
    ]
    items = [
        Item(
            name=frame.name,
            width=frame.width,
            height=frame.height,
            labels=_boxes(labels[frame.name].boxes) if frame.name in labels else None,
            predictions=_boxes(newest[frame.name].boxes) if frame.name in newest else (),
        )
        for frame in frames
    ]
    versions = {row.model_version for row in newest.values()}
    dataset = Dataset(
        labels=tuple(task.labels),
        items=tuple(items),
        name=task.name,
        model_version=max(versions) if versions else None,
    )
    return dataset, {frame.name: frame for frame in frames}


def _boxes(rows: list[dict[str, Any]]) -> tuple[Box, ...]:
    return tuple(
        Box(row["label"], row["x"], row["y"], row["w"], row["h"], row.get("score")) for row in rows
    )


def write_export(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    task: Task,
    fmt: DatasetFormat,
    include: Iterable[Part],
) -> IO[bytes]:
    """The task's dataset in ``fmt`` as a zip in a temporary file (deleted when closed; the
    caller closes it once sent). A frame whose stored bytes
    are no longer those ingest checked is left out and listed in ``labelloop.json``.

    :class:`ExportTooLarge` past ``export_max_bytes`` of images, before anything is sent.
    """
    parts = sorted(set(include))
    dataset, stored = task_dataset(session, task, parts)
    skipped: list[dict[str, str]] = []
    total = 0

    def image(item: Item) -> bytes | None:
        nonlocal total
        frame = stored[item.name]
        try:
            data = read_verified(
                store, frame.object_key, frame.sha256, max_bytes=settings.ingest_max_frame_bytes
            )
        except NotAsRecorded as refused:
            skipped.append({"frame": item.name, "reason": refused.reason})
            return None
        total += len(data)
        if total > settings.export_max_bytes:
            raise ExportTooLarge(
                f"task {task.id}'s export is over LABELLOOP_EXPORT_MAX_BYTES "
                f"({settings.export_max_bytes:,} bytes of images)"
            )
        return data

    file = tempfile.TemporaryFile()  # noqa: SIM115 - the response closes it once sent
    try:
        with zipfile.ZipFile(file, "w", allowZip64=True) as archive:
            write_dataset(fmt, dataset, ZipSink(archive), image)
            record = _manifest(task, fmt, parts, dataset, skipped)
            archive.writestr(MANIFEST, json.dumps(record, indent=2))
    except BaseException:
        file.close()
        raise
    file.seek(0)
    return file


def _manifest(
    task: Task,
    fmt: str,
    parts: Sequence[str],
    dataset: Dataset,
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """What the export holds: ``unlabeled`` names the files exported only for their
    pre-annotations (formats cannot tell them from frames labeled empty; the importer can)."""
    left_out = {entry["frame"] for entry in skipped}
    files = file_names([item.name for item in dataset.items])
    kept = [item for item in dataset.items if item.name not in left_out]
    return {
        "task": task.id,
        "name": task.name,
        "format": fmt,
        "include": parts,
        "labels": list(dataset.labels),
        "model_version": dataset.model_version,
        "frames": len(kept),
        "labeled": sum(item.labels is not None for item in kept),
        "files": {files[item.name]: item.name for item in kept if files[item.name] != item.name},
        "unlabeled": [files[item.name] for item in kept if item.labels is None],
        "skipped": skipped,
    }
