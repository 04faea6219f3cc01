"""An existing dataset into a new task, through the same paths as everyone's work: its images
uploaded to the object store (ingest validates and hashes them), its labels submitted per job
(attributed to the importer, counted toward the label threshold), so a team with old labels
starts with a model instead of from zero."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from labelloop.client import LabelloopClient
from labelloop.datasets import Box, Dataset, DatasetError, Item
from labelloop.progress import create_task_with_progress
from schemas.events import MAX_BOXES_PER_FRAME, MAX_FRAMES_PER_EVENT

MAX_BOXES_PER_SUBMISSION = 4000
"""The annotations route's own bound on boxes per request."""


@dataclass(frozen=True)
class ImportOutcome:
    """What an import made: the task, its frames, and what of the dataset did not come in."""

    task: dict[str, Any]
    frames: int
    labeled: int
    boxes: int
    clipped: int
    """Boxes reaching past their image, cut to it (labelloop's boxes lie inside the frame)."""
    dropped: int
    """Boxes with nothing inside the image, left out."""
    rejected: list[str]
    """Frames ingest refused (each with its reason on the task's timeline)."""


def labeled_items(dataset: Dataset, root: Path) -> list[Item]:
    """The items a dataset's labels come from: every image, except those a labelloop export
    says were there only for their pre-annotations (its ``labelloop.json``)."""
    record = root / "labelloop.json"
    unlabeled: set[str] = set()
    if record.is_file():
        unlabeled = set(json.loads(record.read_text()).get("unlabeled", []))
    return [item for item in dataset.items if item.name not in unlabeled]


def fit_boxes(item: Item) -> tuple[list[dict[str, Any]], int, int]:
    """The item's labels as the API takes them, cut to the image; how many were clipped and
    how many lay wholly outside."""
    boxes, clipped, dropped = [], 0, 0
    for box in item.labels or ():
        x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
        x1, y1 = min(box.x + box.w, float(item.width)), min(box.y + box.h, float(item.height))
        if x1 - x0 < 1e-6 or y1 - y0 < 1e-6:
            dropped += 1
            continue
        clipped += (x0, y0, x1, y1) != box.corners
        boxes.append(Box(box.label, x0, y0, x1 - x0, y1 - y0).api_shape())
    if len(boxes) > MAX_BOXES_PER_FRAME:
        raise DatasetError(f"{item.name}: {len(boxes)} boxes; a frame holds {MAX_BOXES_PER_FRAME}")
    return boxes, clipped, dropped


def submissions(
    frames: list[str], labels: dict[str, list[dict[str, Any]]]
) -> Iterator[list[dict[str, Any]]]:
    """A job's labeled frames in requests within the route's bounds (frames and boxes)."""
    batch: list[dict[str, Any]] = []
    boxes = 0
    for name in frames:
        if name not in labels:
            continue
        size = len(labels[name])
        if batch and (
            len(batch) == MAX_FRAMES_PER_EVENT or boxes + size > MAX_BOXES_PER_SUBMISSION
        ):
            yield batch
            batch, boxes = [], 0
        batch.append({"frame": name, "boxes": labels[name]})
        boxes += size
    if batch:
        yield batch


def import_dataset(
    client: LabelloopClient,
    dataset: Dataset,
    root: Path,
    console: Console,
    *,
    name: str,
    **task: Any,
) -> ImportOutcome:
    """Create a task from ``dataset``: upload its images, wait for its jobs (pushed), then
    submit its labels job by job. The dataset is checked whole before anything is created."""
    labeled: dict[str, list[dict[str, Any]]] = {}
    clipped = dropped = 0
    for item in labeled_items(dataset, root):
        boxes, cut, outside = fit_boxes(item)
        labeled[item.name] = boxes
        clipped, dropped = clipped + cut, dropped + outside
    files = [item.path for item in dataset.items if item.path is not None]
    if len(files) != len(dataset.items):
        raise DatasetError("every image of an imported dataset must be a file")
    created = create_task_with_progress(
        client, files, console, name=name, labels=list(dataset.labels), **task
    )
    done: set[str] = set()
    for job in created.jobs:
        fresh = [frame for frame in job["frames"] if frame not in done]
        for body in submissions(fresh, labeled):
            client.request("PUT", f"/api/jobs/{job['id']}/annotations", json={"frames": body})
        done.update(fresh)
    return ImportOutcome(
        task=created.task,
        frames=len(done),
        labeled=len(done & labeled.keys()),
        boxes=sum(len(labeled[frame]) for frame in done & labeled.keys()),
        clipped=clipped,
        dropped=dropped,
        rejected=sorted({item.name for item in dataset.items} - done),
    )
