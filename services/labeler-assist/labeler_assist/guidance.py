"""What the task's model advises people: which frames to label next, which labels look wrong.

The rules are :mod:`labeler_assist.quality`'s; here they meet the data. The ranking is read
live from the pre-annotations (each carries its frame's ``uncertainty``), so a route and the
``frames.ranked`` event agree. Labels are checked by a model only on frames it never trained
on (its list of trained frames travels with ``model.published``): after each published
version, every labeled frame outside its training set; after each submission, the submitted
frames, by the version serving then. Each check is announced (``labels.issues-found``) and
kept per frame; a check of labels since replaced is stale and not shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import Session, col, select

from labeler_assist import IDENTITY
from labeler_assist.models import Annotation, AssistFrame, LabelCheck, Preannotation, ServedModel
from labeler_assist.preannotation import LoadedModel, ModelServer
from labeler_assist.quality import Box, find_issues, labels_fingerprint, rank_frames
from labelloop.db import rows_in
from schemas.envelope import CloudEvent
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    MAX_ISSUES_PER_EVENT,
    CheckedFrame,
    FramesRanked,
    FramesRankedData,
    LabelIssue,
    LabelIssuesFound,
    LabelIssuesFoundData,
    RankedFrame,
)

log = logging.getLogger(__name__)

Strategy = Literal["uncertainty", "spread"]


@dataclass(frozen=True)
class Ranking:
    """Frames nobody labeled, most informative first, and what ranked them."""

    model_version: int | None
    strategy: Strategy
    frames: list[tuple[str, float]]


def ranking(session: Session, task_id: str) -> Ranking:
    """The task's unlabeled frames by the serving version's uncertainty (frames it has not
    scored yet after, spread), or spread before any model."""
    labeled = set(session.exec(select(Annotation.frame).where(Annotation.task_id == task_id)))
    names = session.exec(
        select(AssistFrame.name).where(AssistFrame.task_id == task_id).order_by(AssistFrame.name)
    ).all()
    unlabeled = [name for name in names if name not in labeled]
    served = session.get(ServedModel, task_id)
    if served is None:
        return Ranking(None, "spread", rank_frames(unlabeled, {}))
    scores = dict(
        session.exec(
            select(Preannotation.frame, Preannotation.uncertainty).where(
                Preannotation.task_id == task_id, Preannotation.model_version == served.version
            )
        ).all()
    )
    return Ranking(served.version, "uncertainty", rank_frames(unlabeled, scores))


def record_ranking(server: ModelServer, task_id: str, cause: CloudEvent[Any]) -> Ranking:
    """Work out the ranking again and announce its top (once per model version)."""
    top = server.settings.assist_ranked_top
    with server.transactions.unit_of_work() as uow:
        ranked = ranking(uow.session, task_id)
        uow.record(
            FramesRanked.create(
                FramesRankedData(
                    task_id=task_id,
                    model_version=ranked.model_version,
                    strategy=ranked.strategy,
                    unlabeled=len(ranked.frames),
                    frames=[RankedFrame(frame=f, score=s) for f, s in ranked.frames[:top]],
                ),
                source=IDENTITY.source,
                key=(task_id, ranked.model_version or 0),
                taskid=task_id,
                cause=cause,
            )
        )
    return ranked


def labeled_outside(
    session: Session, model: LoadedModel, frames: Iterable[str] | None
) -> list[str]:
    """Of ``frames`` (None: every labeled frame of the task), the labeled ones ``model`` never
    trained on, in name order; none when its training set is unknown."""
    if model.trained is None:
        return []
    where = Annotation.task_id == model.task_id
    if frames is None:
        labeled = session.exec(select(Annotation.frame).where(where)).all()
    else:
        rows = rows_in(session, Annotation, col(Annotation.frame), sorted(set(frames)), where)
        labeled = [row.frame for row in rows]
    return sorted(name for name in labeled if name not in model.trained)


async def check_labels(
    server: ModelServer,
    task_id: str,
    frames: Sequence[str] | None,
    trigger: Literal["model.published", "labels.submitted"],
    cause: CloudEvent[Any],
) -> int:
    """Check the labels of ``frames`` (None: all) that the serving version never trained on,
    and announce what it found; the number of frames checked."""
    model = await server.for_task(task_id)
    if model is None:
        return 0
    engine = server.transactions.engine

    def todo() -> tuple[list[str], dict[str, AssistFrame]]:
        with Session(engine) as session:
            names = labeled_outside(session, model, frames)
            known = {
                row.name: row
                for row in rows_in(
                    session,
                    AssistFrame,
                    col(AssistFrame.name),
                    names,
                    AssistFrame.task_id == task_id,
                )
            }
        return [name for name in names if name in known], known

    names, known = await asyncio.to_thread(todo)
    found: dict[str, list[Box]] = {}
    version = model.version
    async for used, batch, detections in server.detect_frames(model, names, known):
        version = used.version
        found.update(zip(batch, (used.boxes(d) for d in detections), strict=True))
    confident = server.settings.assist_issue_conf
    await asyncio.to_thread(
        _record_checks, server, task_id, version, found, confident, trigger, cause
    )
    return len(found)


def _record_checks(
    server: ModelServer,
    task_id: str,
    version: int,
    found: dict[str, list[Box]],
    confident: float,
    trigger: Literal["model.published", "labels.submitted"],
    cause: CloudEvent[Any],
) -> None:
    """Compare each frame's current labels with the model's boxes; one event per chunk."""
    with server.transactions.unit_of_work() as uow:
        labels = {
            row.frame: row.boxes
            for row in rows_in(
                uow.session,
                Annotation,
                col(Annotation.frame),
                list(found),
                Annotation.task_id == task_id,
            )
        }
        checked: list[CheckedFrame] = []
        issues: list[LabelIssue] = []
        part = 0

        def announce() -> None:
            nonlocal part, checked, issues
            if not checked:
                return
            event = LabelIssuesFound.create(
                LabelIssuesFoundData(
                    task_id=task_id,
                    model_version=version,
                    trigger=trigger,
                    checked=checked,
                    issues=sorted(issues, key=lambda issue: -issue.score),
                ),
                source=IDENTITY.source,
                key=(task_id, version, cause.id, part),
                taskid=task_id,
                cause=cause,
            )
            uow.record(event)
            part, checked, issues = part + 1, [], []

        for frame in sorted(found):
            boxes = labels.get(frame)
            if boxes is None:
                continue  # its labels are gone: nothing to check
            frame_issues = find_issues(
                frame, [Box.of(box) for box in boxes], found[frame], confident
            )
            if (
                len(checked) >= MAX_FRAMES_PER_EVENT
                or len(issues) + len(frame_issues) > MAX_ISSUES_PER_EVENT
            ):
                announce()
            checked.append(CheckedFrame(frame=frame, labels_sha256=labels_fingerprint(boxes)))
            issues.extend(frame_issues)
        announce()


@dataclass(frozen=True)
class Issues:
    """The current issues of a task's labels, most likely first, and the newest checker."""

    model_version: int | None
    checked: int
    issues: list[dict[str, Any]]


def current_issues(session: Session, task_id: str) -> Issues:
    """Issues of the newest check of each labeled frame whose labels are still those checked."""
    checks = session.exec(select(LabelCheck).where(LabelCheck.task_id == task_id)).all()
    labels = {
        row.frame: row.boxes
        for row in rows_in(
            session,
            Annotation,
            col(Annotation.frame),
            [c.frame for c in checks],
            Annotation.task_id == task_id,
        )
    }
    current = [
        check
        for check in checks
        if check.frame in labels and labels_fingerprint(labels[check.frame]) == check.labels_sha256
    ]
    issues = sorted(
        (issue for check in current for issue in check.issues),
        key=lambda issue: (-float(issue["score"]), issue["frame"]),
    )
    newest = max((check.model_version for check in current), default=None)
    return Issues(newest, len(current), issues)
