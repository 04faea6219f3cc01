"""labelloop as Label Studio's ML backend: a connected project becomes a task, its images
frames, its annotations labels, and the task's models its predictions.

Nothing Label Studio's webhook sends is taken as it is: its webhooks carry no credential, so a
payload only says *which* task to look at, and the annotation is read back from Label Studio
with the project owner's token. Labels go through :func:`~labeler_assist.labels.submit_labels`
like everyone's (threshold crossings, training through the trainer's queue), never inside the
request; predictions come from the task's served model and are pushed into Label Studio after
each pre-annotation, so nobody has to ask.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import Session, col, select

from labeler_assist.labels import NotFound, NotPermitted, NotYetKnown, submit_labels
from labeler_assist.lookups import find_frame, newest_by_frame
from labeler_assist.models import (
    Annotation,
    AssistFrame,
    AssistJob,
    LabelCounter,
    Preannotation,
    ServedModel,
    StudioProject,
    StudioPush,
)
from labeler_assist.preannotation import ModelServer
from labeler_assist.projections import PROJECTION
from labeler_assist.studio import (
    StudioConfig,
    StudioError,
    annotator,
    boxes_from_results,
    frame_name,
    model_version,
    parse_label_config,
    prediction_score,
    project_id,
    results_from_boxes,
    studio_task,
)
from labeler_assist.studio_client import (
    StudioClient,
    StudioUnavailable,
    allowed_origins,
    origin,
)
from labelloop.auth import Principal, Role
from labelloop.config import Settings
from labelloop.db import in_chunks
from labelloop.messaging.outbox import Transactions
from labelloop.runtime import Runtime
from labelloop.storage import ObjectStore
from labelloop.tasks import PROJECTION as TASKS
from labelloop.tasks import Task, TaskCreate, new_task_id, task_created_event
from schemas.envelope import utcnow
from schemas.events import FrameLabels, JobCreated, PreannotationReady

log = logging.getLogger(__name__)

FETCH_CONCURRENCY = 8
"""Label Studio calls one sync or reconciliation has in flight."""
FRAMES_PER_SUBMISSION = 100
LABEL_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Waits for a frame's job before a webhook's labels are left to the job's reconciliation."""


class _ClaimedElsewhere(Exception):
    """Another replica made the project's task first."""


class StudioRefused(Exception):
    """A call the backend refuses, with the HTTP status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Connection:
    """A connected project as the bridge uses it (the row, detached, with its config)."""

    origin: str
    project: int
    token: str
    config: StudioConfig
    task_id: str | None
    synced: bool


def _connection(row: StudioProject) -> Connection:
    return Connection(
        row.origin,
        row.project,
        row.token,
        parse_label_config(row.config_xml),
        row.task_id,
        row.synced,
    )


class StudioBridge:
    """What the Label Studio routes and subscribers share: connections, the model server."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        transactions: Transactions,
        server: ModelServer,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transactions = transactions.bound(PROJECTION)
        self.tasks = transactions.bound(TASKS)
        self.server = server
        self.engine = transactions.engine
        self._busy: set[tuple[str, int]] = set()
        self._running: set[asyncio.Task[None]] = set()

    # --- connections ----------------------------------------------------------------------------

    def client(self, connection: Connection) -> StudioClient:
        return StudioClient(
            connection.origin,
            connection.token,
            timeout_s=self.settings.label_studio_timeout_s,
            max_image_bytes=self.settings.ingest_max_frame_bytes,
        )

    def connect(
        self,
        principal: Principal,
        uid: object,
        schema: str,
        hostname: str,
        token: str,
        extra_params: object = None,
    ) -> Connection:
        """Record (or refresh) a project's connection, as ``/setup`` sends it; its task is made
        by :meth:`sync` once the project has tasks, with the connection's extra params. Only an
        admin connects or changes one; another token that reads the task gets it as it is."""
        project = project_id(uid)
        config = parse_label_config(schema)
        params = task_params(extra_params, config)
        where = origin(hostname)
        if where not in allowed_origins(self.settings.label_studio_urls):
            raise StudioRefused(
                403,
                f"{where} is not a Label Studio this labelloop serves: add it to "
                "LABELLOOP_LABEL_STUDIO_URLS",
            )
        if not token or len(token) > 256:
            raise StudioRefused(422, "/setup needs the project owner's access_token")
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(StudioProject, (where, project))
            if row is None:
                if principal.role is not Role.ADMIN:
                    raise StudioRefused(403, "connecting a new project needs an admin token")
                row = StudioProject(
                    origin=where,
                    project=project,
                    token=token,
                    config_xml=schema,
                    connected_by=principal.name,
                )
            elif row.task_id is not None:
                if not principal.can_read(row.task_id):
                    raise StudioRefused(404, f"no Label Studio project {project} here")
                with Session(self.engine) as tasks:
                    task = tasks.get(Task, row.task_id)
                if task is not None and set(task.labels) != set(config.labels):
                    raise StudioRefused(
                        409,
                        f"task {task.id} has the labels {sorted(task.labels)} and the project's "
                        f"config now names {sorted(config.labels)}: a task's labels are fixed, "
                        "so connect a new project for new labels",
                    )
            if principal.role is not Role.ADMIN:  # others may use a connection, not change it
                return _connection(row)
            row.token, row.config_xml = token, schema
            if row.task_id is None:
                row.task_params = params
            row.updated_at = utcnow()
            session.add(row)
            session.commit()
            return _connection(row)

    def connections(self, project: int) -> list[Connection]:
        with Session(self.engine) as session:
            rows = session.exec(select(StudioProject).where(StudioProject.project == project))
            return [_connection(row) for row in rows]

    def for_task(self, task_id: str) -> Connection | None:
        with Session(self.engine) as session:
            row = session.exec(
                select(StudioProject).where(StudioProject.task_id == task_id)
            ).first()
            return None if row is None else _connection(row)

    def current_version(self, task_id: str | None) -> int | None:
        if task_id is None:
            return None
        with Session(self.engine) as session:
            served = session.get(ServedModel, task_id)
            return None if served is None else served.version

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work after the answer (Label Studio waits 3 s for /setup): kept referenced until
        it ends, its failure logged. Work lost with the process is redone by the next trigger
        (a /setup, a webhook, the job's reconciliation)."""
        running = asyncio.get_running_loop().create_task(work)
        self._running.add(running)
        running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        if not running.cancelled() and (failed := running.exception()) is not None:
            log.warning("label studio: background work failed: %r", failed)

    # --- the project's tasks become frames ------------------------------------------------------

    async def sync(self, connection: Connection) -> None:
        """Make the project's task and upload its tasks' images as frames, then the manifest,
        once; a project without tasks yet waits for the next trigger."""
        key = (connection.origin, connection.project)
        if connection.synced or key in self._busy:
            return
        self._busy.add(key)
        client = self.client(connection)
        try:
            # by id: Label Studio pages by last update, so a task changed meanwhile shows twice
            listed = list({t["id"]: t async for t in client.tasks(connection.project)}.values())
            if not listed:
                return
            task_id = connection.task_id
            if task_id is None:
                title = str((await client.project(connection.project)).get("title") or "")
                title = "".join(char for char in title if char.isprintable())
                task_id = await asyncio.to_thread(self._create_task, connection, title)
                if task_id is None:
                    return  # another replica made it and syncs
            await self._upload(client, connection, task_id, listed)
        finally:
            self._busy.discard(key)
            await client.aclose()

    def _create_task(self, connection: Connection, title: str) -> str | None:
        """The project's task (``task.created``) and its claim on the row, one transaction."""
        with Session(self.engine) as session:
            row = session.get(StudioProject, (connection.origin, connection.project))
            by = row.connected_by if row is not None else "label-studio"
            params = dict(row.task_params) if row is not None else {}
        task = Task(
            id=new_task_id(),
            name=(
                f"Label Studio: {title}" if title else f"Label Studio project {connection.project}"
            )[:200],
            labels=list(connection.config.labels),
            **{
                "segment_size": self.settings.label_studio_segment_size,
                "label_threshold": self.settings.label_studio_label_threshold,
                **params,
            },
            created_by=by,
        )
        try:
            with self.tasks.unit_of_work() as uow:
                claimed = uow.session.execute(
                    update(StudioProject)
                    .where(
                        col(StudioProject.origin) == connection.origin,
                        col(StudioProject.project) == connection.project,
                        col(StudioProject.task_id).is_(None),
                    )
                    .values(task_id=task.id, updated_at=utcnow())
                )
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    raise _ClaimedElsewhere
                uow.record(task_created_event(task))
        except _ClaimedElsewhere:  # the transaction rolled back: no task, no event
            return None
        log.info("label studio: project %s is task %s", connection.project, task.id)
        return task.id

    async def _upload(
        self,
        client: StudioClient,
        connection: Connection,
        task_id: str,
        listed: list[dict[str, Any]],
    ) -> None:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)
        skipped: list[dict[str, Any]] = []

        async def one(task: dict[str, Any]) -> str | None:
            url = (task.get("data") or {}).get(connection.config.value_key)
            if not isinstance(url, str) or not url:
                skipped.append({"task": task.get("id"), "reason": "no image URL in its data"})
                return None
            name = frame_name(int(task["id"]), url)
            try:
                async with gate:
                    image = await client.image(url)
            except StudioUnavailable as failed:
                skipped.append({"task": task["id"], "reason": str(failed)})
                return None
            key = f"tasks/{task_id}/data/{name}"
            await asyncio.to_thread(self.store.put_bytes, key, image)
            return name

        names = [n for n in await asyncio.gather(*(one(t) for t in listed)) if n is not None]
        manifest = json.dumps({"files": sorted(names)}).encode()
        await asyncio.to_thread(
            self.store.put_bytes, f"tasks/{task_id}/manifest.json", manifest, "application/json"
        )
        with Session(self.engine) as session:
            row = session.get(StudioProject, (connection.origin, connection.project))
            if row is not None:
                row.synced, row.frames, row.skipped = True, len(names), skipped[:1000]
                row.updated_at = utcnow()
                session.add(row)
                session.commit()
        log.info(
            "label studio: project %s: %d frames uploaded to task %s, %d tasks skipped",
            connection.project,
            len(names),
            task_id,
            len(skipped),
        )

    # --- annotations become labels --------------------------------------------------------------

    async def take_annotations(
        self,
        connection: Connection,
        studio_tasks: Sequence[int],
        *,
        wait_for_jobs: bool,
        job: JobCreated | None = None,
    ) -> int:
        """Read the tasks' newest annotations back from Label Studio and submit them as labels;
        the frames labeled. ``wait_for_jobs``: retry a while for frames whose job is not known
        yet (a webhook that came before the job); else leave them to the job's reconciliation.
        ``job``: the job the frames belong to, as its event announced it."""
        task_id = connection.task_id
        if task_id is None or not studio_tasks:
            return 0
        client = self.client(connection)
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def newest(studio_id: int) -> tuple[int, dict[str, Any] | None]:
            async with gate:
                found = await client.annotations(studio_id)
            kept = [a for a in found if not a.get("was_cancelled")]
            kept.sort(key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
            return studio_id, (kept[-1] if kept else None)

        try:
            found = dict(await asyncio.gather(*(newest(t) for t in dict.fromkeys(studio_tasks))))
        finally:
            await client.aclose()
        annotations = {t: a for t, a in found.items() if a is not None}
        taken = 0
        for wait in (0.0, *LABEL_RETRY_S) if wait_for_jobs else (0.0,):
            await asyncio.sleep(wait)
            done = await asyncio.to_thread(self._submit, connection, task_id, annotations, job)
            taken += len(done)
            for studio_id in done:
                annotations.pop(studio_id)
            if not annotations:
                break
        return taken

    def _submit(
        self,
        connection: Connection,
        task_id: str,
        annotations: dict[int, dict[str, Any]],
        job: JobCreated | None = None,
    ) -> list[int]:
        """Submit what can be now (the frame and its job known), grouped by job and author;
        the Label Studio tasks done (taken, or refused with the reason logged)."""
        with Session(self.engine) as session:
            frames = _studio_frames(session, task_id)
            jobs = list(session.exec(select(AssistJob).where(AssistJob.task_id == task_id)))
        job_of = {name: known.id for known in reversed(jobs) for name in known.frames}
        if job is not None:  # as announced, whether or not this service's view has it yet
            for listed in job.data.frames:
                job_of[listed] = job.data.job_id
                if (announced := studio_task(listed)) is not None:
                    frames[announced] = listed
        groups: dict[tuple[str, str], list[tuple[int, FrameLabels]]] = defaultdict(list)
        done: list[int] = []
        known: dict[int, tuple[str, AssistFrame | None, Annotation | None]] = {}
        with Session(self.engine) as session:  # one session for the lot
            for studio_id in annotations:
                name = frames.get(studio_id)
                if name is None or name not in job_of:
                    continue  # not a frame yet, or its job not yet known: later
                current = session.get(Annotation, (task_id, name))
                known[studio_id] = (name, find_frame(session, task_id, name), current)
        for studio_id, (name, frame, current) in known.items():
            annotation = annotations[studio_id]
            if frame is None:
                continue
            try:
                boxes = boxes_from_results(
                    annotation.get("result") or [],
                    connection.config,
                    name,
                    frame.width,
                    frame.height,
                )
            except StudioError as refused:
                log.warning("label studio: task %s's annotation refused: %s", studio_id, refused)
                done.append(studio_id)
                continue
            author = annotator(annotation)
            if current is not None and current.boxes == boxes and current.submitted_by == author:
                done.append(studio_id)  # already taken (a redelivery, a second webhook)
                continue
            groups[(job_of[name], author)].append(
                (studio_id, FrameLabels.model_validate({"frame": name, "boxes": boxes}))
            )
        return done + self._submit_groups(task_id, groups)

    def _submit_groups(
        self, task_id: str, groups: dict[tuple[str, str], list[tuple[int, FrameLabels]]]
    ) -> list[int]:
        """Each job's labels by each author, in submissions within the route's bounds; the
        Label Studio tasks done (a frame not known here yet is left for later)."""
        done: list[int] = []
        for (job_id, author), items in groups.items():
            principal = Principal(author, Role.ANNOTATOR, frozenset({task_id}))
            for start in range(0, len(items), FRAMES_PER_SUBMISSION):
                part = items[start : start + FRAMES_PER_SUBMISSION]
                try:
                    with self.transactions.unit_of_work() as uow:
                        submit_labels(uow, job_id, [labels for _, labels in part], principal)
                except NotYetKnown:
                    continue
                except (NotFound, NotPermitted, ValueError) as refused:
                    log.warning("label studio: labels for job %s refused: %s", job_id, refused)
                done.extend(studio_id for studio_id, _ in part)
        return done

    async def on_job_created(self, event: JobCreated) -> None:
        """A job of a connected project's task: take the annotations its frames already have
        in Label Studio (made before the job existed, or whose webhook was missed)."""
        connection = await asyncio.to_thread(self.for_task, event.data.task_id)
        if connection is None:
            return
        studio_tasks = [t for f in event.data.frames if (t := studio_task(f)) is not None]
        try:
            taken = await self.take_annotations(
                connection, studio_tasks, wait_for_jobs=False, job=event
            )
        except StudioUnavailable as failed:  # the next webhook or /setup tries again
            log.warning("label studio: job %s: annotations not read: %s", event.data.job_id, failed)
            return
        if taken:
            log.info("label studio: job %s: %d frames' labels taken", event.data.job_id, taken)

    # --- predictions ----------------------------------------------------------------------------

    async def predictions(
        self, connection: Connection, studio_tasks: list[int]
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """Each task's prediction from the task's current model (pre-annotating first the
        frames it has not seen), in the order asked: the version and Label Studio's results."""
        task_id = connection.task_id
        version = await asyncio.to_thread(self.current_version, task_id)
        empty = {"result": [], "score": 0.0, "model_version": model_version(version)}
        if task_id is None:
            return version, [dict(empty) for _ in studio_tasks]
        with Session(self.engine) as session:
            frames = _studio_frames(session, task_id)
        wanted = [frames[t] for t in studio_tasks if t in frames]
        if version is not None and wanted:
            # answered here, so not pushed too (Label Studio keeps what /predict answers)
            await asyncio.to_thread(self._pushed, task_id, [(name, version) for name in wanted])
            await self.server.preannotate(task_id, wanted)
        rows, sizes = await asyncio.to_thread(self._newest, task_id, wanted)
        answered = []
        for studio_id in studio_tasks:
            name = frames.get(studio_id)
            row = rows.get(name) if name is not None else None
            if row is None or name not in sizes:
                answered.append(dict(empty))
                continue
            width, height = sizes[name]
            answered.append(
                {
                    "result": results_from_boxes(row.boxes, connection.config, width, height),
                    "score": prediction_score(row.boxes, row.uncertainty),
                    "model_version": model_version(row.model_version),
                }
            )
        return version, answered

    def _newest(
        self, task_id: str, frames: list[str]
    ) -> tuple[dict[str, Preannotation], dict[str, tuple[int, int]]]:
        with Session(self.engine) as session:
            rows = newest_by_frame(
                row
                for chunk in in_chunks(frames)
                for row in session.exec(
                    select(Preannotation).where(
                        Preannotation.task_id == task_id, col(Preannotation.frame).in_(chunk)
                    )
                )
            )
            sizes = {
                frame.name: (frame.width, frame.height)
                for chunk in in_chunks(frames)
                for frame in session.exec(
                    select(AssistFrame).where(
                        AssistFrame.task_id == task_id, col(AssistFrame.name).in_(chunk)
                    )
                )
            }
        return rows, sizes

    async def push(self, events: Sequence[PreannotationReady]) -> None:
        """Give Label Studio the new pre-annotations of connected projects' unlabeled frames
        (each frame and version once), so predictions appear there without anyone asking."""
        by_task: dict[str, list[PreannotationReady]] = defaultdict(list)
        for event in events:
            if studio_task(event.data.frame) is not None:
                by_task[event.data.task_id].append(event)
        for task_id, ready in by_task.items():
            connection = await asyncio.to_thread(self.for_task, task_id)
            if connection is None:
                continue
            todo = await asyncio.to_thread(self._unpushed, task_id, ready)
            if not todo:
                continue
            predictions = [
                {
                    "task": studio_task(event.data.frame),
                    "result": results_from_boxes(
                        [box.model_dump() for box in event.data.predictions],
                        connection.config,
                        width,
                        height,
                    ),
                    "score": prediction_score(
                        [box.model_dump() for box in event.data.predictions],
                        event.data.uncertainty,
                    ),
                    "model_version": model_version(event.data.model_version),
                }
                for event, (width, height) in todo
            ]
            client = self.client(connection)
            try:
                created = await client.import_predictions(connection.project, predictions)
            except StudioUnavailable as failed:
                # /predict still answers them when Label Studio asks; nothing here is lost
                log.warning(
                    "label studio: project %s: predictions not pushed: %s",
                    connection.project,
                    failed,
                )
                continue
            finally:
                await client.aclose()
            done = [(event.data.frame, event.data.model_version) for event, _ in todo]
            await asyncio.to_thread(self._pushed, task_id, done)
            log.info("label studio: project %s: %d predictions pushed", connection.project, created)

    def _unpushed(
        self, task_id: str, ready: list[PreannotationReady]
    ) -> list[tuple[PreannotationReady, tuple[int, int]]]:
        """The events whose frame nobody labeled and whose version was not pushed, with sizes."""
        with Session(self.engine) as session:
            todo = []
            for event in ready:
                frame, version = event.data.frame, event.data.model_version
                if session.get(Annotation, (task_id, frame)) is not None:
                    continue
                if session.get(StudioPush, (task_id, frame, version)) is not None:
                    continue
                known = find_frame(session, task_id, frame)
                if known is not None:
                    todo.append((event, (known.width, known.height)))
            return todo

    def _pushed(self, task_id: str, given: list[tuple[str, int]]) -> None:
        """Frames and versions Label Studio has (pushed, or answered by /predict)."""
        with Session(self.engine) as session:
            for frame, version in given:
                session.merge(StudioPush(task_id=task_id, frame=frame, model_version=version))
            session.commit()

    def training_state(self, connection: Connection) -> dict[str, Any]:
        """What Start Training answers at once: training runs by the task's label threshold."""
        if connection.task_id is None:
            return {"status": "waiting", "detail": "the project's tasks are not frames yet"}
        with Session(self.engine) as session:
            task = session.get(Task, connection.task_id)
            counter = session.get(LabelCounter, connection.task_id)
        labeled = counter.labeled_frames if counter is not None else 0
        threshold = task.label_threshold if task is not None else 0
        return {
            "status": "queued by label threshold",
            "task_id": connection.task_id,
            "labeled_frames": labeled,
            "label_threshold": threshold,
            "next_training_at": (labeled // threshold + 1) * threshold if threshold else None,
            "model_version": model_version(self.current_version(connection.task_id)),
        }


TASK_PARAMS = ("label_threshold", "segment_size", "overlap", "priority")
"""What a connection's extra params may set on the task made for it."""


def task_params(extra: object, config: StudioConfig) -> dict[str, Any]:
    """The connection's extra params (Label Studio's ``extra_params``) for its task, checked as
    a task's own settings are; unknown names and bad values are refused with the reason."""
    if extra in (None, "", {}):
        return {}
    if not isinstance(extra, dict):
        raise StudioRefused(422, "extra params must be a JSON object")
    unknown = sorted(set(extra) - set(TASK_PARAMS))
    if unknown:
        raise StudioRefused(
            422, f"unknown extra params {unknown}; labelloop takes {list(TASK_PARAMS)}"
        )
    try:
        TaskCreate(name="label studio", labels=list(config.labels), **extra)
    except ValidationError as invalid:
        reasons = "; ".join(
            f"{e['loc'][-1] if e['loc'] else ''}: {e['msg']}" for e in invalid.errors()
        )
        raise StudioRefused(422, f"extra params: {reasons}") from invalid
    return dict(extra)


def _studio_frames(session: Session, task_id: str) -> dict[int, str]:
    """The task's frames by the Label Studio task they came from."""
    names = session.exec(select(AssistFrame.name).where(AssistFrame.task_id == task_id))
    return {t: name for name in names if (t := studio_task(name)) is not None}


PART = "labeler-assist.studio"


def process_bridge(runtime: Runtime) -> StudioBridge:
    """The process's one bridge, and with it its one model server: the subscribers' (made at
    ``register``) where the process consumes, else made on the first request of a process that
    only routes (the api pod)."""
    made: StudioBridge | None = runtime.parts.get(PART)
    if made is None:
        transactions = runtime.transactions.bound(PROJECTION)
        server = ModelServer(runtime.settings, runtime.store, transactions)
        made = StudioBridge(runtime.settings, runtime.store, runtime.transactions, server)
        runtime.parts[PART] = made
    return made
