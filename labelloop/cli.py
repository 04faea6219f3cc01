"""The ``labelloop`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from labelloop.config import get_settings
from labelloop.stack.base import StackError

if TYPE_CHECKING:
    from labelloop.datasets import DatasetFormat

app = typer.Typer(
    help="labelloop: event-driven image annotation with a model in the loop.", no_args_is_help=True
)
stack_app = typer.Typer(
    help="Run the local stack: Kafka, MinIO and (optionally) Triton.", no_args_is_help=True
)
schemas_app = typer.Typer(
    help="Contracts: JSON Schemas and the AsyncAPI document.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")

console = Console(stderr=True)
WithTriton = Annotated[bool, typer.Option("--triton/--no-triton", help="Also run Triton.")]


def _api_base(api: str | None) -> str:
    settings = get_settings()
    return api or f"http://{settings.api_host}:{settings.api_port}"


def _stack(with_triton: bool):  # type: ignore[no-untyped-def]
    from labelloop.stack.manager import Stack

    return Stack(get_settings(), with_triton=with_triton)


def _progress(line: str) -> None:
    console.log(line)


@stack_app.command("up")
def stack_up(triton: WithTriton = False) -> None:
    """Start the stack (idempotent): build or fetch tools once, wait until each is healthy."""
    started = time.monotonic()
    try:
        with console.status("bringing the stack up…"):
            statuses = _stack(triton).up(_progress)
    except StackError as error:
        console.print(f"[red]stack up failed:[/red] {error}")
        raise typer.Exit(1) from error
    _print_status(statuses)
    console.print(f"stack up in {time.monotonic() - started:.1f}s")


@stack_app.command("down")
def stack_down(triton: Annotated[bool, typer.Option("--triton/--no-triton")] = True) -> None:
    """Stop the services and every server the stack started; data stays under var/."""
    from labelloop.serve import serve_daemon

    if serve_daemon(get_settings()).stop():
        _progress("labelloop serve: stopped")
    _stack(triton).down(_progress)


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    triton: Annotated[bool, typer.Option("--triton/--no-triton")] = True,
) -> None:
    """Each component, its address, version and health; exit code 1 if any is unhealthy."""
    from labelloop.stack.manager import status_dicts

    statuses = _stack(triton).status()
    if as_json:
        typer.echo(json.dumps(status_dicts(statuses), indent=2))
    else:
        _print_status(statuses)
    required = [s for s in statuses if s.name != "triton" or s.running]
    if not all(s.healthy for s in required):
        raise typer.Exit(1)


def _print_status(statuses) -> None:  # type: ignore[no-untyped-def]
    table = Table("component", "address", "version", "health", "pid")
    for s in statuses:
        health = (
            "[green]healthy[/green]"
            if s.healthy
            else ("[yellow]starting[/yellow]" if s.running else "[red]down[/red]")
        )
        table.add_row(s.name, s.address, s.version or "-", health, str(s.pid or "-"))
    Console().print(table)


@schemas_app.command("export")
def schemas_export() -> None:
    """Write schemas/generated/ (JSON Schema per event type, AsyncAPI) from the code."""
    from schemas.generate import write_generated

    for path in write_generated():
        console.log(f"wrote {path}")


ServiceNames = Annotated[
    list[str] | None,
    typer.Option("--service", "-s", help="Run only these services (default: all in one process)."),
]


@app.command("serve")
def serve(
    service: ServiceNames = None,
    detach: Annotated[bool, typer.Option(help="Run in the background; wait until ready.")] = False,
) -> None:
    """Run services: all in one process (API on LABELLOOP_API_PORT), or one as a pod does."""
    from labelloop.serve import run_detached, run_foreground

    settings = get_settings()
    names = service or []
    if detach:
        try:
            address = run_detached(settings, names, _progress)
        except RuntimeError as error:
            console.print(f"[red]serve failed:[/red] {error}")
            raise typer.Exit(1) from error
        console.print(f"labelloop serving at http://{address}")
    else:
        run_foreground(settings, names)


task_app = typer.Typer(help="Tasks: create one from a folder of frames.", no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("create")
def task_create(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Frames folder.")],
    labels: Annotated[str, typer.Option(help="Comma-separated label names.")] = "object",
    name: Annotated[str | None, typer.Option(help="Task name (default: the folder's).")] = None,
    segment_size: Annotated[int, typer.Option(help="Frames per job; 0 = one job.")] = 0,
    overlap: Annotated[int, typer.Option(help="Frames shared by consecutive jobs.")] = 0,
    label_threshold: Annotated[int, typer.Option(help="Retrain every N labeled frames.")] = 10,
    priority: Annotated[int, typer.Option(min=0, max=3, help="P0 (first) to P3.")] = 2,
    wait: Annotated[bool, typer.Option(help="Wait for the jobs (pushed, not polled).")] = True,
    api: Annotated[str | None, typer.Option(help="API base URL.")] = None,
) -> None:
    """Create a task from FOLDER's images, upload them and print its jobs when they exist."""
    from labelloop.client import LabelloopClient
    from labelloop.progress import create_task_with_progress, frame_files

    settings = get_settings()
    base = _api_base(api)
    options: dict[str, Any] = {
        "labels": [label.strip() for label in labels.split(",") if label.strip()],
        "segment_size": segment_size,
        "overlap": overlap,
        "label_threshold": label_threshold,
        "priority": priority,
        "name": name or folder.name,
    }
    with LabelloopClient(base, settings.admin_token) as client:
        if not wait:
            task = client.request("POST", "/api/tasks", json=options)
            client.upload(task["id"], frame_files(folder))
            typer.echo(json.dumps(task, indent=2))
            return
        created = create_task_with_progress(client, frame_files(folder), console, **options)
    typer.echo(json.dumps({"task": created.task, "jobs": created.jobs}, indent=2))


DatasetFormatOption = Annotated[
    str, typer.Option("--format", "-f", help="coco, yolo (Ultralytics), cvat (images 1.1) or voc.")
]


def _format(value: str) -> DatasetFormat:
    from labelloop.datasets import FORMATS

    if value not in FORMATS:
        console.print(f"[red]no format {value!r}: use one of {', '.join(FORMATS)}[/red]")
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


@app.command("export")
def export_command(
    task_id: str,
    out: Annotated[Path, typer.Option("--out", "-o", help="An empty or new folder.")],
    fmt: DatasetFormatOption = "coco",
    include: Annotated[
        str, typer.Option(help="Comma-separated: labels, preannotations.")
    ] = "labels",
    api: Annotated[str | None, typer.Option(help="API base URL.")] = None,
) -> None:
    """Export TASK's images and annotations in a dataset format, unpacked into OUT."""
    import tempfile

    from labelloop.client import LabelloopClient, LabelloopError
    from labelloop.datasets import DatasetError, extract_zip

    settings = get_settings()
    params = {"format": _format(fmt), "include": include}
    with (
        LabelloopClient(_api_base(api), settings.admin_token) as client,
        tempfile.TemporaryFile(dir=out.parent if out.parent.is_dir() else None) as archive,
    ):
        try:
            client.download(f"/api/tasks/{task_id}/export", archive, params=params)
            archive.seek(0)
            extract_zip(archive, out, max_bytes=settings.export_max_bytes)
        except (LabelloopError, DatasetError) as refused:
            console.print(f"[red]{refused}[/red]")
            raise typer.Exit(1) from None
    record = json.loads((out / "labelloop.json").read_text())
    console.print(
        f"task {task_id}: {record['frames']} frames ({record['labeled']} labeled) as {fmt} "
        f"in {out}"
        + (f"; {len(record['skipped'])} left out, see labelloop.json" if record["skipped"] else "")
    )


@app.command("import")
def import_command(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="The dataset.")],
    fmt: DatasetFormatOption = "coco",
    name: Annotated[str | None, typer.Option(help="Task name (default: the folder's).")] = None,
    segment_size: Annotated[int, typer.Option(help="Frames per job; 0 = one job.")] = 0,
    label_threshold: Annotated[int, typer.Option(help="Retrain every N labeled frames.")] = 10,
    priority: Annotated[int, typer.Option(min=0, max=3, help="P0 (first) to P3.")] = 2,
    api: Annotated[str | None, typer.Option(help="API base URL.")] = None,
) -> None:
    """Create a task from a dataset: its images uploaded, its labels submitted by you."""
    from labelloop.client import LabelloopClient, LabelloopError
    from labelloop.datasets import DatasetError, read_dataset
    from labelloop.importer import import_dataset

    settings = get_settings()
    try:
        dataset = read_dataset(_format(fmt), folder)
        with LabelloopClient(_api_base(api), settings.admin_token) as client:
            outcome = import_dataset(
                client,
                dataset,
                folder,
                console,
                name=name or folder.resolve().name,
                segment_size=segment_size,
                label_threshold=label_threshold,
                priority=priority,
            )
    except (LabelloopError, DatasetError) as refused:
        console.print(f"[red]{refused}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"task {outcome.task['id']}: {outcome.frames} frames, {outcome.labeled} labeled with "
        f"{outcome.boxes} boxes ({outcome.clipped} clipped to their image, {outcome.dropped} "
        f"outside it left out)"
        + (f"; ingest refused {len(outcome.rejected)}" if outcome.rejected else "")
    )
    typer.echo(json.dumps({"task": outcome.task, "rejected": outcome.rejected}, indent=2))


db_app = typer.Typer(help="The database schema: Alembic migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
DatabaseUrl = Annotated[
    str | None, typer.Option(help="Database URL (default: LABELLOOP_DATABASE_URL).")
]


def _quiet_alembic() -> None:
    # Alembic logs a line per autogenerate plugin as it is imported.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database to the newest schema (the Helm chart's hook Job runs this)."""
    _quiet_alembic()
    from labelloop.migrations import head, upgrade

    upgrade(database_url or get_settings().database_url, revision)
    console.log(f"database at revision {head() if revision == 'head' else revision}")


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m")]) -> None:
    """Write the next migration from the models (after changing a models.py)."""
    _quiet_alembic()
    from labelloop.migrations import revision

    console.log(f"wrote {revision(message)}")


@app.command("topics")
def topics() -> None:
    """Create labelloop's missing Kafka topics and their DLQs (retention.ms=-1: the audit log).

    `labelloop stack up` does this locally; the Helm chart runs it as a post-install hook.
    """
    from labelloop.messaging.topics import ensure_topics_async

    created = asyncio.run(ensure_topics_async(get_settings()))
    console.log(f"created {', '.join(created)}" if created else "every topic exists")


token_app = typer.Typer(help="API tokens with roles.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who will hold it.")],
    role: Annotated[str, typer.Option(help="admin, annotator or auditor.")],
    task: Annotated[
        list[str] | None, typer.Option(help="Limit it to this task (repeat for more).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a token (printed once on stdout); the same as `POST /api/tokens`."""
    from sqlmodel import Session

    from labelloop.auth import Role, issue_token
    from labelloop.db import create_tables, get_engine

    try:
        chosen = Role(role)
    except ValueError:
        console.print(f"[red]unknown role {role!r}[/red] (admin, annotator or auditor)")
        raise typer.Exit(2) from None
    if chosen is Role.ADMIN and task:
        console.print("[red]an admin token cannot be limited to tasks[/red]")
        raise typer.Exit(2)
    engine = get_engine(database_url or get_settings().database_url)
    create_tables(engine)
    with Session(engine) as session:
        row, token = issue_token(session, name, chosen, task or None)
    console.print(f"{row.id}: {row.role} token for {row.name}")
    typer.echo(token)


audit_app = typer.Typer(help="Audits: state and timelines from the events.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("task")
def audit_task(
    task_id: str,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database URL (default: LABELLOOP_DATABASE_URL), e.g. a replay's."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole document as JSON.")] = False,
) -> None:
    """A task's state and timeline: frames, who labeled what, which model pre-annotated what,
    which labels a model that never trained on them found suspect."""
    from labelloop.audit import UnknownTask, task_audit
    from labelloop.composition import projections
    from labelloop.db import get_engine

    engine = get_engine(db or get_settings().database_url)
    try:
        document = task_audit(engine, task_id, projections())
    except UnknownTask as unknown:
        console.print(f"[red]{unknown}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    task = document["task"]
    console.print(
        f"task {task['id']} {task['name']!r} by {task['created_by']}: "
        f"{len(document['frames'])} frames, {len(document['jobs'])} jobs, "
        f"{len(document['annotations'])} labeled, {len(document['models'])} model versions, "
        f"{len(document['webhook_deliveries'])} webhook deliveries"
    )
    suspect = [
        (check["frame"], issue)
        for check in document.get("label_checks", [])
        for issue in check["issues"]
    ]
    if suspect:
        issues = Table("frame", "kind", "box", "score", "checked by", title="label issues")
        checker = {check["frame"]: check["model_version"] for check in document["label_checks"]}
        for frame, issue in sorted(suspect, key=lambda item: -float(item[1]["score"])):
            box = issue["box"]
            issues.add_row(
                frame,
                issue["kind"] + (f" → {issue['suggested']}" if issue.get("suggested") else ""),
                f"{box['label']} ({box['x']:.0f}, {box['y']:.0f}, {box['w']:.0f}x{box['h']:.0f})",
                f"{float(issue['score']):.2f}",
                f"v{checker[frame]}",
            )
        console.print(issues)
    for event in document["unpublished"]:
        console.print(
            f"[red]never published[/red] {event['type']} {event['event_id']} "
            f"({event['bytes']:,} bytes): {event['error']}"
        )
    table = Table("seq", "time", "type", "subject", "caused by", title="timeline")
    for event in document["events"]:
        table.add_row(
            str(event["seq"]),
            event["time"],
            event["type"].removeprefix("io.labelloop."),
            event["subject"] or "",
            (event["causationid"] or "")[:12],
        )
    Console().print(table)


def _moment(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time; without an offset it is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        console.print(
            f"[red]{option} {text!r} is not an ISO 8601 time[/red], e.g. 2026-11-23T09:00Z"
        )
        raise typer.Exit(2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("replay")
def replay_command(
    into: Annotated[
        str, typer.Option("--into", help="Database URL to rebuild into (not the live one).")
    ],
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO 8601, UTC if no offset).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (inclusive).")] = None,
    topics: Annotated[
        list[str] | None,
        typer.Option("--topics", help="Only these topics (repeat; default: every event topic)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Rebuild every projection from Kafka alone: no webhook is sent, no training starts."""
    from labelloop.composition import projections
    from labelloop.db import same_database
    from labelloop.replay import replay
    from schemas.events import PROJECT_TOPICS

    settings = get_settings()
    if same_database(into, settings.database_url):
        console.print("[red]refusing to replay into the live database[/red]; name another --into")
        raise typer.Exit(2)
    known = {topic.value: topic for topic in PROJECT_TOPICS}
    unknown = sorted(set(topics or ()) - set(known))
    if unknown:
        console.print(f"[red]unknown topic {unknown[0]!r}[/red] (known: {', '.join(known)})")
        raise typer.Exit(2)
    chosen = [known[name] for name in topics] if topics else list(PROJECT_TOPICS)
    start, end = _moment(since, "--since"), _moment(until, "--until")
    if start and end and end < start:
        console.print("[red]--until is before --since[/red]")
        raise typer.Exit(2)
    _quiet_alembic()
    with Progress(
        "replaying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        line = bar.add_task("events", total=None)
        stats = asyncio.run(
            replay(
                settings,
                into,
                projections=projections(),
                since=start,
                until=end,
                topics=chosen,
                progress=lambda done, total: bar.update(line, completed=done, total=total),
            )
        )
    if as_json:
        typer.echo(json.dumps(stats.summary()))
    else:
        console.print(
            f"replayed {stats.records} records in {stats.seconds:.1f}s "
            f"({stats.events_per_s:.0f}/s): {stats.applied} applied, "
            f"{stats.duplicates} already there, {stats.skipped} not labelloop events"
        )


def configure_logging() -> None:
    """Log at the settings' level (every command line built on the core calls this)."""
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("httpx", "aiokafka"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def main() -> None:
    configure_logging()
    app()
