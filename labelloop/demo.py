"""``make run``'s end-to-end job: upload the bundled frames and watch jobs arrive as webhooks."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.progress import create_task_with_progress

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "frames"
JOB_EVENTS = ["io.labelloop.job.created.v1", "io.labelloop.task.jobs-ready.v1"]


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


def run_demo(settings: Settings, console: Console, frames: Path = SAMPLES) -> None:
    """Create a task from ``frames`` with a webhook subscriber, and show what arrived."""
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
            client, frames, console, labels=["box"], segment_size=10, name="demo"
        )
        uploaded = time.monotonic()
        task_id = created.task["id"]
        status = client.request("GET", f"/api/tasks/{task_id}/frames")
        deadline = time.monotonic() + 15
        while (
            time.monotonic() < deadline
            and len([d for d in receiver.deliveries if d["event"].get("taskid") == task_id])
            < len(created.jobs) + 1
        ):
            time.sleep(0.1)

    console.print(
        f"task {task_id}: {status['processed']} frames processed, "
        f"{status['rejected']} rejected, jobs ready {uploaded - started:.1f}s after start"
    )
    rejected = Table("rejected frame", "reason", title="frames refused by ingest")
    for frame in status["frames"]:
        if frame["status"] == "rejected":
            rejected.add_row(frame["name"], frame["reason"])
    console.print(rejected)
    jobs = Table("job", "frames", "first", "last", title="jobs (pushed, never polled)")
    for job in created.jobs:
        jobs.add_row(
            job["id"],
            f"{job['start_frame']}-{job['stop_frame']}",
            job["frames"][0],
            job["frames"][-1],
        )
    console.print(jobs)
    hooks = Table("event", "webhook-id", "signature", title=f"webhook deliveries to {url}")
    for delivery in receiver.deliveries:
        if delivery["event"].get("taskid") != task_id:
            continue
        hooks.add_row(
            delivery["event"]["type"],
            delivery["id"],
            "[green]verified[/green]" if delivery["verified"] else "[red]BAD[/red]",
        )
    console.print(hooks)
