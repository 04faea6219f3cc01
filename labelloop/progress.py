"""Creating a task from a folder with a live progress bar (``labelloop task create``, demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labelloop.client import FRAME_EVENTS, CreatedTask, LabelloopClient
from labelloop.images import IMAGE_SUFFIXES


def frame_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f"no image files in {folder}")
    return files


def create_task_with_progress(
    client: LabelloopClient, files: list[Path], console: Console, *, name: str, **task: Any
) -> CreatedTask:
    """Upload ``files`` as a task's frames, showing uploads and processing, until its jobs
    exist."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        uploads = progress.add_task("uploading", total=len(files))
        processed = progress.add_task("processing", total=len(files))
        jobs = progress.add_task("jobs", total=None, visible=False)

        def on_progress(kind: str, event: dict[str, Any]) -> None:
            if kind == "uploaded":
                progress.advance(uploads)
            elif kind in FRAME_EVENTS:
                progress.advance(processed)
            elif kind == "io.labelloop.job.created.v1":
                progress.update(jobs, visible=True)
                progress.advance(jobs)

        return client.create_task(name=name, files=files, progress=on_progress, **task)
