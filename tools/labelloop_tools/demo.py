"""``make run``'s end-to-end job: upload the bundled frames and watch jobs arrive as webhooks."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from labelloop.client import LabelloopClient, LabelloopError
from labelloop.config import Settings
from labelloop.datasets import Box
from labelloop.progress import create_task_with_progress, frame_files
from labelloop_tools.synthetic import annotations_body

CHECKOUT_SAMPLES = Path(__file__).resolve().parents[2] / "samples"
"""The checkout's ``samples/``: this package lives in ``tools/`` beside it and is never
installed anywhere else (the wheel and the image hold neither)."""
JOB_EVENTS = ["io.labelloop.job.created.v1", "io.labelloop.task.jobs-ready.v1"]


class SamplesNotFoundError(FileNotFoundError):
    """The samples folder, or a part of it the demo reads, is not where it was looked for."""


@dataclass(frozen=True)
class Samples:
    """The bundled sample data, under one root (``--samples``, default the checkout's)."""

    root: Path

    @property
    def frames(self) -> Path:
        """25 frames for the upload-to-jobs run, two of them corrupt."""
        return self.root / "frames"

    @property
    def loop(self) -> Path:
        """52 synthetic frames (``labelloop_tools.synthetic``, seeds 0-51) for the model loop."""
        return self.root / "loop"

    @property
    def loop_labels(self) -> Path:
        """Their boxes, as an annotator would submit them (the demo labels the first 40)."""
        return self.root / "loop-labels.json"

    @classmethod
    def locate(cls, root: Path = CHECKOUT_SAMPLES) -> Samples:
        """The samples under ``root``; raises :class:`SamplesNotFoundError` naming what is
        missing, before anything is uploaded."""
        samples = cls(root.resolve())
        for part in (samples.frames, samples.loop, samples.loop_labels):
            if not part.exists():
                raise SamplesNotFoundError(
                    f"no sample data at {part}: expected {samples.root} to hold frames/, loop/ "
                    "and loop-labels.json (the repository's samples/; pass --samples PATH)"
                )
        return samples


@dataclass
class LocalReceiver:
    """A webhook subscriber on loopback that verifies every delivery it gets."""

    secret: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                arrived = time.monotonic()
                try:
                    Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                    verified = True
                except WebhookVerificationError:
                    verified = False
                receiver.deliveries.append(
                    {
                        "event": json.loads(body),
                        "id": self.headers["webhook-id"],
                        "verified": verified,
                        "arrived": arrived,
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/labelloop"

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        return [d for d in list(self.deliveries) if d["event"].get("taskid") == task_id]


@dataclass(frozen=True)
class JobsOutcome:
    """What the first part saw: the frames' outcomes, the jobs and the webhook deliveries."""

    task_id: str
    files: int
    processed: int
    rejected: dict[str, str]
    """Refused frame → ingest's reason."""
    jobs: list[str]
    deliveries: list[dict[str, Any]]
    """``{"type", "webhook_id", "verified"}`` for each delivery of the task's events."""

    def problems(self) -> list[str]:
        """Why this part failed (empty when it did what the README promises)."""
        found = []
        if self.processed + len(self.rejected) != self.files:
            found.append(
                f"{self.files} files uploaded, but only {self.processed} processed "
                f"and {len(self.rejected)} rejected"
            )
        if not self.jobs:
            found.append("no jobs were cut")
        if len(self.deliveries) < len(self.jobs) + 1:
            found.append(
                f"{len(self.deliveries)} webhook deliveries arrived, expected "
                f"{len(self.jobs)} job.created and one task.jobs-ready"
            )
        bad = [d["webhook_id"] for d in self.deliveries if not d["verified"]]
        if bad:
            found.append(f"webhook deliveries with a bad signature: {', '.join(bad)}")
        return found


def run_demo(settings: Settings, console: Console, samples: Samples) -> JobsOutcome:
    """Create a task from the sample frames with a webhook subscriber, and show what arrived."""
    frames = samples.frames
    receiver = LocalReceiver()
    url = receiver.start()
    base = f"http://{settings.api_host}:{settings.api_port}"
    with LabelloopClient(base, settings.admin_token) as client:
        subscription = client.request(
            "POST", "/api/webhooks", json={"url": url, "events": JOB_EVENTS}
        )
        receiver.secret = subscription["secret"]
        console.rule(f"task from {frames} (segment_size 10)")
        started = time.monotonic()
        created = create_task_with_progress(
            client, frame_files(frames), console, labels=["box"], segment_size=10, name="demo"
        )
        uploaded = time.monotonic()
        task_id = created.task["id"]
        status = client.request("GET", f"/api/tasks/{task_id}/frames")
        expected, deadline = len(created.jobs) + 1, time.monotonic() + 15
        while time.monotonic() < deadline and len(receiver.of_task(task_id)) < expected:
            time.sleep(0.1)

    console.print(
        f"task {task_id}: {status['processed']} frames processed, "
        f"{status['rejected']} rejected, jobs ready {uploaded - started:.1f}s after start"
    )
    deliveries = receiver.of_task(task_id)
    _print_jobs(console, status, created.jobs, deliveries, url)
    return JobsOutcome(
        task_id=task_id,
        files=len(frame_files(frames)),
        processed=status["processed"],
        rejected={f["name"]: f["reason"] for f in status["frames"] if f["status"] == "rejected"},
        jobs=[job["id"] for job in created.jobs],
        deliveries=[
            {"type": d["event"]["type"], "webhook_id": d["id"], "verified": d["verified"]}
            for d in deliveries
        ],
    )


def _print_jobs(
    console: Console,
    status: dict[str, Any],
    jobs: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    url: str,
) -> None:
    """The refused frames, the jobs and the webhook deliveries, as tables."""
    rejected = Table("rejected frame", "reason", title="frames refused by ingest")
    for frame in status["frames"]:
        if frame["status"] == "rejected":
            rejected.add_row(frame["name"], frame["reason"])
    console.print(rejected)
    table = Table("job", "frames", "first", "last", title="jobs (pushed, never polled)")
    for job in jobs:
        table.add_row(
            job["id"],
            f"{job['start_frame']}-{job['stop_frame']}",
            job["frames"][0],
            job["frames"][-1],
        )
    console.print(table)
    hooks = Table("event", "webhook-id", "signature", title=f"webhook deliveries to {url}")
    for delivery in deliveries:
        hooks.add_row(
            delivery["event"]["type"],
            delivery["id"],
            "[green]verified[/green]" if delivery["verified"] else "[red]BAD[/red]",
        )
    console.print(hooks)


@dataclass(frozen=True)
class LoopOutcome:
    """How the model-in-the-loop run ended (the ``retrain`` benchmark reads it)."""

    task_id: str
    ending: dict[str, Any]
    """The run's last event: model.published, model.rejected or training.failed."""
    threshold_to_published_s: float | None
    """From the threshold event to the model.published event, by their event times."""
    preannotated: int
    unlabeled: int
    """Frames nobody labeled: each should be pre-annotated."""

    def problems(self) -> list[str]:
        """Why this part failed (empty when a model was published and pre-annotated)."""
        if self.ending.get("type") != "io.labelloop.model.published.v1":
            return [f"no model published: {self.ending.get('type')} {self.ending.get('data')}"]
        if self.preannotated < self.unlabeled:
            return [
                f"{self.preannotated} of the {self.unlabeled} unlabeled frames "
                "were pre-annotated within 120 s"
            ]
        return []


def run_model_loop_demo(
    settings: Settings, console: Console, out_dir: Path, samples: Samples
) -> LoopOutcome:
    """Label a first batch, watch the task's model train, then see it pre-annotate the rest."""
    labeled_count = 40
    frames_dir = samples.loop
    truth = {
        name: [Box(**box) for box in boxes]
        for name, boxes in json.loads(samples.loop_labels.read_text()).items()
    }
    rest = len(truth) - labeled_count
    base = f"http://{settings.api_host}:{settings.api_port}"
    console.rule(f"model in the loop: label {labeled_count} frames, pre-annotate {rest}")
    with LabelloopClient(base, settings.admin_token) as client:
        created = create_task_with_progress(
            client,
            frame_files(frames_dir),
            console,
            labels=["box"],
            label_threshold=labeled_count,
            priority=0,
            name="model-loop",
        )
        [job] = created.jobs
        client.request(
            "PUT",
            f"/api/jobs/{job['id']}/annotations",
            json=annotations_body(job["frames"][:labeled_count], truth),
        )
        console.print(f"labeled {labeled_count} frames through the API: threshold reached")
        task_id = created.task["id"]
        threshold, outcome = _watch_training(client, task_id, console)
        if outcome.get("type") != "io.labelloop.model.published.v1":
            console.print(f"[red]no model published:[/red] {outcome.get('data')}")
            return LoopOutcome(task_id, outcome, None, 0, rest)
        waited = _event_time(outcome) - _event_time(threshold)
        console.print(f"threshold → model published: {waited.total_seconds():.1f} s")
        metrics = outcome["data"]["metrics"]
        console.print(
            f"model v{outcome['data']['version']} published: mAP50 {metrics['map50']:.2f}, "
            f"precision {metrics['precision']:.2f}, recall {metrics['recall']:.2f} "
            f"at conf {settings.serve_conf}"
        )
        deadline = time.monotonic() + 120
        frames: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(frames) < rest:
            frames = client.request("GET", f"/api/jobs/{job['id']}/preannotations")["frames"]
            time.sleep(0.5)
    _show_preannotations(frames, truth, frames_dir, out_dir / "preannotated.png", console)
    with LabelloopClient(base, settings.admin_token) as client:
        _show_advice(client, task_id, console)
    return LoopOutcome(task_id, outcome, round(waited.total_seconds(), 1), len(frames), rest)


def _show_advice(client: LabelloopClient, task_id: str, console: Console) -> None:
    """What the model says to label next, and which labels it checked and found suspect."""
    ranked = client.request("GET", f"/api/tasks/{task_id}/next-frames?limit=5")
    top = ", ".join(f"{f['frame']} ({f['score']:.2f})" for f in ranked["frames"])
    console.print(f"label next ({ranked['strategy']}, v{ranked['model_version']}): {top}")
    deadline = time.monotonic() + 60
    while True:
        try:
            found = client.request("GET", f"/api/tasks/{task_id}/label-issues?limit=3")
            break
        except LabelloopError:  # 409 until the model has checked the labels it did not train on
            if time.monotonic() > deadline:
                console.print("label issues: no check finished within 60 s")
                return
            time.sleep(1)
    issues = "; ".join(f"{i['frame']} {i['kind']} ({i['score']:.2f})" for i in found["issues"])
    console.print(
        f"label issues: {found['checked']} labeled frames checked by v{found['model_version']} "
        f"(frames it did not train on): {issues or 'none'}"
    )


def _event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"])


def _watch_training(
    client: LabelloopClient, task_id: str, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Follow the task's event stream until its run publishes, rejects or fails; returns the
    threshold event that started it and that ending."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    endings = (
        "io.labelloop.model.published.v1",
        "io.labelloop.model.rejected.v1",
        "io.labelloop.training.failed.v1",
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        bar = progress.add_task("waiting for the trainer", total=None)
        threshold: dict[str, Any] = {}
        for event in client.events(task_id, timeout_s=1800):
            if event["type"] == "io.labelloop.labels.threshold-reached.v1" and not threshold:
                threshold = event
            elif event["type"] == "io.labelloop.training.started.v1":
                data = event["data"]
                progress.update(
                    bar,
                    total=data["epochs"],
                    completed=data["epoch"],
                    description=f"training v{data['version']} on {data['device']}",
                )
            elif event["type"] in endings:
                return threshold, event
    return threshold, {}


def _show_preannotations(
    frames: list[dict[str, Any]],
    truth: dict[str, list[Any]],
    frames_dir: Path,
    picture: Path,
    console: Console,
) -> None:
    from PIL import Image, ImageDraw

    table = Table(
        "frame",
        "model",
        "served by",
        "boxes (score)",
        "truth",
        title="pre-annotations of the frames nobody labeled",
    )
    for frame in frames:
        table.add_row(
            frame["frame"],
            f"v{frame['model_version']}",
            frame["backend"],
            ", ".join(f"{b['score']:.2f}" for b in frame["boxes"]) or "-",
            str(len(truth[frame["frame"]])),
        )
    console.print(table)
    if not frames:
        return
    shown = frames[0]
    image = Image.open(frames_dir / shown["frame"]).convert("RGB")
    image = image.resize((image.width * 3, image.height * 3))
    draw = ImageDraw.Draw(image)
    for box in shown["boxes"]:
        x, y, w, h = (box[k] * 3 for k in ("x", "y", "w", "h"))
        draw.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=3)
        draw.text((x + 4, y + 4), f"{box['label']} {box['score']:.2f}", fill=(0, 255, 0))
    picture.parent.mkdir(parents=True, exist_ok=True)
    image.save(picture)
    console.print(f"drew the pre-annotations of {shown['frame']} into {picture}")
