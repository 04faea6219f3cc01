"""Ingest throughput: frames validated per second, beside a plain loop doing the same work.

Both benchmarks upload with 8 client threads and report the upload rate beside the ingest rate
(ingest cannot outrun the notifications it is sent), and the peer figure is measured in the
same run: a single-threaded loop that GETs the same objects from the same store, decodes them
fully and hashes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from rich.console import Console

from labelloop.client import JOBS_READY, LabelloopClient
from labelloop.config import Settings
from labelloop.storage import ObjectStore

UPLOAD_THREADS = 8


def real_frames(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 1280x720 JPEGs at quality 90 with camera-like noise (~180 KB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    noise = Image.effect_noise((1280, 720), 16).convert("RGB")
    base = Image.blend(Image.linear_gradient("L").resize((1280, 720)).convert("RGB"), noise, 0.25)
    paths = []
    for index in range(count):
        image = base.copy()
        x = index * 37 % 1100
        ImageDraw.Draw(image).rectangle([x, 200, x + 160, 420], fill=(240, 140, 20))
        path = folder / f"real_{index:05d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _ingested(settings: Settings, name: str, files: list[Path]) -> dict[str, Any]:
    """Upload ``files`` as a new task (8 threads, then the manifest) and follow its events to
    ``task.jobs-ready``; then the plain loop over the same objects."""
    api = f"http://{settings.api_host}:{settings.api_port}"
    with (
        LabelloopClient(api, settings.admin_token) as client,
        httpx.Client(timeout=120, trust_env=False) as store_http,
    ):
        task = client.request("POST", "/api/tasks", json={"name": name, "labels": ["box"]})
        names = [path.name for path in files]
        urls = client.request("POST", f"/api/tasks/{task['id']}/uploads", json={"files": names})

        def put(path: Path) -> None:
            store_http.put(urls["frames"][path.name], content=path.read_bytes()).raise_for_status()

        started = time.monotonic()
        with ThreadPoolExecutor(UPLOAD_THREADS) as uploaders:
            list(uploaders.map(put, files))
        upload_s = time.monotonic() - started
        manifest = json.dumps({"files": names}).encode()
        store_http.put(urls["manifest"], content=manifest).raise_for_status()
        events = list(client.events(task["id"], until=JOBS_READY, timeout_s=600))
        to_jobs_ready_s = time.monotonic() - started
    processed = sorted(
        datetime.fromisoformat(e["time"])
        for e in events
        if e["type"] == "io.labelloop.frame.processed.v1"
    )
    keys = [f"tasks/{task['id']}/data/{name}" for name in names]
    return {
        "frames": len(files),
        "frame_bytes_mean": round(sum(path.stat().st_size for path in files) / len(files)),
        "upload_frames_per_s": round(len(files) / upload_s, 1),
        "ingest_frames_per_s": round(
            (len(processed) - 1) / (processed[-1] - processed[0]).total_seconds(), 1
        ),
        "upload_to_jobs_ready_s": round(to_jobs_ready_s, 1),
        "plain_loop_frames_per_s": round(_plain_loop(settings, keys), 1),
    }


def _plain_loop(settings: Settings, keys: list[str]) -> float:
    """Objects per second a single-threaded GET, full decode and hash loop gets through."""
    store = ObjectStore.from_settings(settings)
    started = time.perf_counter()
    for key in keys:
        blob = store.get_bytes(key)
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
        hashlib.sha256(blob).hexdigest()
    return len(keys) / (time.perf_counter() - started)


def bench_ingest(settings: Settings, console: Console) -> dict[str, Any]:
    """1,000 small frames (~1 KB): ingest's rate against 1,000 frames/s and the plain loop."""
    from labelloop_tools.probes import write_frames

    count = 1000
    console.log(f"ingest: {count} frames of ~1 KB, {UPLOAD_THREADS} upload threads")
    with tempfile.TemporaryDirectory() as folder:
        figures = _ingested(settings, "bench-ingest", write_frames(Path(folder), count))
    return {**figures, "ingest_frames_per_s_required": 1000}


def bench_ingest_real(settings: Settings, console: Console) -> dict[str, Any]:
    """300 real-size frames (1280x720 JPEG q90): ingest against half the plain loop."""
    count = 300
    console.log(f"ingest_real: {count} frames of 1280x720, {UPLOAD_THREADS} upload threads")
    with tempfile.TemporaryDirectory() as folder:
        figures = _ingested(settings, "bench-real", real_frames(Path(folder), count))
    ratio = figures["ingest_frames_per_s"] / figures["plain_loop_frames_per_s"]
    return {
        **figures,
        "ingest_over_plain_loop": round(ratio, 2),
        "ingest_over_plain_loop_required": 0.5,
    }


BACKLOG_FRAMES = 3000


def bench_ingest_backlog(settings: Settings, console: Console) -> dict[str, Any]:
    """Ingest's own rate: 3,000 frames of ~1 KB waiting in Kafka, then ingest started alone in
    a process of its own (as its pod runs), beside the plain loop over the same objects.

    ``ingest`` above runs every service in one process, where each ``frame.processed`` is also
    taken by five consumers sharing its interpreter, and the upload paces it; this is what
    ingest itself gets through.
    """
    from sqlmodel import Session, func, select

    from ingest.models import Frame
    from labelloop.db import get_engine
    from labelloop_tools.bench_scale import (
        deployment,
        new_task,
        start_service,
        task_counts,
        upload_frames,
    )

    with (
        tempfile.TemporaryDirectory() as tmp,
        deployment(settings, Path(tmp), services=("api",)) as (scoped, _, processes),
    ):
        task_id = new_task(scoped, BACKLOG_FRAMES)
        upload_frames(scoped, task_id, BACKLOG_FRAMES, console)
        console.log(f"ingest_backlog: {BACKLOG_FRAMES} frames waiting; starting ingest alone")
        start_service(scoped, "ingest", Path(tmp), processes)
        engine = get_engine(scoped.database_url)
        deadline = time.monotonic() + 600
        done = 0
        while done < BACKLOG_FRAMES and time.monotonic() < deadline:
            with Session(engine) as session:
                done = session.exec(
                    select(func.count()).select_from(Frame).where(Frame.task_id == task_id)
                ).one()
            time.sleep(0.2)
        span_s = task_counts(engine, task_id)["span_s"]
        engine.dispose()
        if done < BACKLOG_FRAMES or not span_s:
            raise RuntimeError(f"ingest recorded {done} of {BACKLOG_FRAMES} frames in 10 min")
        keys = [f"tasks/{task_id}/data/f{index:06d}.jpg" for index in range(BACKLOG_FRAMES)]
        return {
            "frames": BACKLOG_FRAMES,
            "ingest_frames_per_s": round((BACKLOG_FRAMES - 1) / span_s, 1),
            "ingest_frames_per_s_required": 1000,
            "plain_loop_frames_per_s": round(_plain_loop(settings, keys), 1),
            "note": "ingest alone in its process on a backlog; the span of its recorded frames",
        }
