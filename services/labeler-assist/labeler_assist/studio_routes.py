"""Label Studio's ML backend protocol at ``/integrations/label-studio/``: ``/health``,
``/setup``, ``/predict`` and ``/webhook``, answered at once (training never runs in a request).

Label Studio sends the credential of the ML backend connection as HTTP Basic auth: the password
is a labelloop API token (the user name is not used); ``Bearer`` works too. ``/setup`` and
``/predict`` need it; ``/webhook`` takes Label Studio's credential-less webhooks, so what they
say is only a hint of which task to read back from Label Studio
(:mod:`labeler_assist.studio_bridge`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field

from labeler_assist.studio import StudioError, model_version, project_id
from labeler_assist.studio_bridge import (
    Connection,
    StudioBridge,
    StudioRefused,
    process_bridge,
)
from labelloop.api.deps import OptionalPrincipalDep, PrincipalDep, RuntimeDep
from labelloop.auth import Principal

router = APIRouter(prefix="/integrations/label-studio", tags=["label-studio"])

MAX_PREDICT_TASKS = 1000
"""Tasks one /predict call may ask about."""
WEBHOOK_MAX_BYTES = 1024 * 1024
"""Largest webhook body taken without a token (an annotation of a thousand boxes is ~300 KB)."""
OPEN_BODIES = {f"{router.prefix}/webhook": WEBHOOK_MAX_BYTES}
"""Label Studio's webhooks carry no credential: their body is taken without one, bounded."""


def bridge(runtime: RuntimeDep) -> StudioBridge:
    return process_bridge(runtime)


BridgeDep = Annotated[StudioBridge, Depends(bridge)]


def _refused(error: StudioRefused | StudioError) -> HTTPException:
    if isinstance(error, StudioRefused):
        return HTTPException(error.status, str(error))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error))


@router.get("/health")
@router.get("/", include_in_schema=False)
def health() -> dict[str, Any]:
    """Label Studio's health check (it allows 1 s): the backend is up."""
    return {"status": "UP", "model_class": "labelloop", "v2": True}


class SetupRequest(BaseModel):
    """What Label Studio sends to ``/setup`` when a project connects (and on later checks)."""

    project: str | int = Field(description="`<project id>.<created timestamp>`.")
    schema_: str = Field(alias="schema", max_length=1024 * 1024, description="The label config.")
    hostname: str = Field(max_length=2048, description="Label Studio's own URL.")
    access_token: str = Field(default="", max_length=256)
    model_version: str | None = None
    extra_params: Any = Field(
        default=None,
        description="The connection's extra params: label_threshold, segment_size, overlap and "
        "priority of the task made for the project.",
    )


@router.post("/setup")
async def setup(body: SetupRequest, bridge: BridgeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Connect a project: its RectangleLabels become a task's labels and its tasks frames
    (uploaded after the answer; Label Studio waits only 3 s). Answers the current version."""
    try:
        connection = await asyncio.to_thread(
            bridge.connect,
            principal,
            body.project,
            body.schema_,
            body.hostname,
            body.access_token,
            body.extra_params,
        )
    except (StudioRefused, StudioError) as refused:
        raise _refused(refused) from refused
    if not connection.synced:
        bridge.in_background(bridge.sync(connection))
    version = await asyncio.to_thread(bridge.current_version, connection.task_id)
    return {"model_version": model_version(version)}


class PredictRequest(BaseModel):
    tasks: list[dict[str, Any]] = Field(max_length=MAX_PREDICT_TASKS)
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


def _readable(bridge: StudioBridge, uid: object, principal: Principal) -> Connection:
    """The caller's connection for a project id, or 404 alike for unknown and unreadable."""
    try:
        project = project_id(uid)
    except StudioError as bad:
        raise _refused(bad) from bad
    for connection in bridge.connections(project):
        if connection.task_id is None or principal.can_read(connection.task_id):
            return connection
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no Label Studio project {project} here")


@router.post("/predict")
async def predict(
    body: PredictRequest, bridge: BridgeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Each task's boxes from the task's current model, loaded once per version (Triton, or
    onnxruntime in process) with labelloop's model version; empty before the first model."""
    project = body.project
    if project is None and body.tasks:
        project = body.tasks[0].get("project")
    connection = await asyncio.to_thread(_readable, bridge, project, principal)
    ids = []
    for task in body.tasks:
        if not isinstance(task.get("id"), int):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "every task needs its id")
        ids.append(task["id"])
    version, results = await bridge.predictions(connection, ids)
    return {"results": results, "model_version": model_version(version)}


@router.post("/webhook")
async def webhook(
    payload: dict[str, Any],
    bridge: BridgeDep,
    principal: OptionalPrincipalDep,
) -> dict[str, Any]:
    """Label Studio's events: an annotation created, updated or deleted is read back from
    Label Studio and taken as labels after the answer; Start Training answers where the task
    stands (training runs by the label threshold, through the trainer's queue). Without a
    credential (Label Studio's own webhooks have none) the answer says nothing but accepted."""
    action = str(payload.get("action") or "")
    project = payload.get("project")
    uid = project.get("id") if isinstance(project, dict) else project
    try:
        connections = await asyncio.to_thread(bridge.connections, project_id(uid))
    except StudioError:
        return {"status": "ignored", "reason": "no project id in the payload"}
    if principal is not None:
        connections = [c for c in connections if c.task_id and principal.can_read(c.task_id)]
        if not connections:
            return {"status": "ignored", "reason": "the project is not connected here"}
    answers: list[dict[str, Any]] = []
    for connection in connections:
        if not connection.synced:
            bridge.in_background(bridge.sync(connection))
            answers.append({"status": "syncing", "detail": "its tasks become frames first"})
        elif action.startswith("ANNOTATION"):
            task = payload.get("task")
            annotation = payload.get("annotation")
            studio_id = task.get("id") if isinstance(task, dict) else None
            if studio_id is None and isinstance(annotation, dict):
                studio_id = annotation.get("task")
            if not isinstance(studio_id, int):
                answers.append({"status": "ignored", "reason": "no task id in the payload"})
                continue
            bridge.in_background(_take(bridge, connection, studio_id))
            answers.append({"status": "accepted", "task": studio_id})
        elif action == "START_TRAINING" and principal is not None:
            answers.append(await asyncio.to_thread(bridge.training_state, connection))
        else:
            answers.append({"status": "ignored", "reason": f"{action or 'no action'} is not used"})
    if principal is None:  # a credential-less caller learns nothing of what is connected
        return {"status": "accepted"}
    return answers[0] if len(answers) == 1 else {"status": "accepted", "projects": answers}


async def _take(bridge: StudioBridge, connection: Connection, studio_id: int) -> None:
    await bridge.take_annotations(connection, [studio_id], wait_for_jobs=True)
