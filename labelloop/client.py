"""A Python client for labelloop's API: create a task from files and get its jobs back,
pushed over the task's event stream (SSE) instead of polled."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

JOBS_READY = "io.labelloop.task.jobs-ready.v1"
PRESIGN_MAX = 10_000
"""Frame names one ``uploads`` call signs at most."""
FRAME_EVENTS = ("io.labelloop.frame.processed.v1", "io.labelloop.frame.rejected.v1")

Progress = Callable[[str, dict[str, Any]], None]
"""Called with ("uploaded", {...}) per file and (event type, event) per event of the task."""


class LabelloopError(RuntimeError):
    """The API refused a request; the message carries its reason."""


@dataclass(frozen=True)
class CreatedTask:
    task: dict[str, Any]
    jobs: list[dict[str, Any]]
    events: list[dict[str, Any]]


class LabelloopClient:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            trust_env=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelloopClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise LabelloopError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        return response.json() if response.content else None

    def request(self, method: str, path: str, *, retries: int = 10, **kwargs: Any) -> Any:
        """One API call; a 409 with ``Retry-After`` (state still converging) is retried."""
        for _ in range(retries):
            response = self.http.request(method, path, **kwargs)
            retry_after = response.headers.get("retry-after")
            if response.status_code != 409 or retry_after is None:
                break
            time.sleep(min(float(retry_after), 5.0))
        return self._json(response)

    def create_task(
        self,
        name: str,
        labels: list[str],
        files: list[Path],
        *,
        segment_size: int = 0,
        overlap: int = 0,
        label_threshold: int = 10,
        priority: int = 2,
        timeout_s: float = 300.0,
        progress: Progress | None = None,
    ) -> CreatedTask:
        """Create a task, upload ``files`` and its manifest, return once its jobs exist."""
        task = self.request(
            "POST",
            "/api/tasks",
            json={
                "name": name,
                "labels": labels,
                "segment_size": segment_size,
                "overlap": overlap,
                "label_threshold": label_threshold,
                "priority": priority,
            },
        )
        self.upload(task["id"], files, progress=progress)
        events = list(
            self.events(task["id"], until=JOBS_READY, timeout_s=timeout_s, progress=progress)
        )
        jobs = self.request("GET", f"/api/tasks/{task['id']}/jobs")
        return CreatedTask(task, jobs, events)

    def upload(self, task_id: str, files: list[Path], *, progress: Progress | None = None) -> None:
        """PUT every file to its presigned URL, then the manifest naming them."""
        names = [path.name for path in files]
        manifest_url = ""
        with httpx.Client(timeout=120, trust_env=False) as store:
            for start in range(0, len(files), PRESIGN_MAX):  # the api signs this many a call
                part = files[start : start + PRESIGN_MAX]
                urls = self.request(
                    "POST",
                    f"/api/tasks/{task_id}/uploads",
                    json={"files": [path.name for path in part]},
                )
                manifest_url = urls["manifest"]
                for path in part:
                    store.put(
                        urls["frames"][path.name], content=path.read_bytes()
                    ).raise_for_status()
                    if progress:
                        progress("uploaded", {"name": path.name})
            manifest = json.dumps({"files": names}).encode()
            store.put(manifest_url, content=manifest).raise_for_status()

    def download(self, path: str, out: BinaryIO, *, params: dict[str, str] | None = None) -> None:
        """Stream a GET's body (an export's zip) into ``out``; a refusal raises its reason."""
        with self.http.stream(
            "GET", path, params=params, timeout=httpx.Timeout(600, read=600)
        ) as response:
            if response.is_error:
                response.read()
                self._json(response)
            for chunk in response.iter_bytes(1024 * 1024):
                out.write(chunk)

    def events(
        self,
        task_id: str,
        *,
        until: str | None = None,
        timeout_s: float = 300.0,
        progress: Progress | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The task's events as they happen (past ones first), until an event of type ``until``.

        A stream the server ends (it gives each one a maximum life) is resumed where it was,
        with ``Last-Event-ID``, until ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        params = {"until": until} if until else {}
        last_id: str | None = None
        while time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            with self.http.stream(
                "GET",
                f"/api/tasks/{task_id}/events",
                params=params,
                headers=headers,
                timeout=httpx.Timeout(timeout_s, read=20),
            ) as response:
                if response.is_error:
                    response.read()
                    self._json(response)
                data: list[str] = []
                event_id: str | None = None
                for line in response.iter_lines():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no {until} for task {task_id} within {timeout_s:.0f}s")
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("\n".join(data))
                        data, last_id = [], event_id or last_id
                        if progress:
                            progress(event["type"], event)
                        yield event
                        if until is not None and event["type"] == until:
                            return
            time.sleep(0.2)  # the server ended this stream: resume after a breath
        if until is not None:
            raise TimeoutError(f"no {until} for task {task_id} within {timeout_s:.0f}s")
