"""jobgen's handler: ``task.data-ready`` in, jobs and their events out, atomically."""

from __future__ import annotations

import logging

from jobgen.domain import job_id, plan_jobs
from jobgen.projections import apply_job_created
from labelloop.messaging.outbox import Transactions
from labelloop.tasks import Task
from schemas.events import (
    JobCreated,
    JobCreatedData,
    TaskDataReady,
    TaskJobsReady,
    TaskJobsReadyData,
)
from schemas.topics import Topic

log = logging.getLogger(__name__)
SOURCE = "/labelloop/jobgen"
CONSUMER = "jobgen"


def handle_data_ready(event: TaskDataReady, transactions: Transactions) -> list[str]:
    """Cut the task into jobs; one ``job.created`` each, then ``task.jobs-ready``.

    Jobs, events and the processed mark commit together, and job ids are deterministic, so a
    crash at any point followed by redelivery yields exactly the same jobs once.
    """
    task_id = event.data.task_id
    with transactions.unit_of_work(CONSUMER, event.id) as uow:
        if uow.already_done:
            return []
        task = uow.session.get(Task, task_id)
        if task is None:
            raise LookupError(f"task.data-ready for unknown task {task_id}")
        plans = plan_jobs(event.data.frames, task.segment_size, task.overlap)
        ids = []
        for plan in plans:
            new_job = job_id(task_id, plan.index)
            created = JobCreated.create(
                JobCreatedData(
                    job_id=new_job,
                    task_id=task_id,
                    start_frame=plan.start_frame,
                    stop_frame=plan.stop_frame,
                    frames=list(plan.frames),
                ),
                source=SOURCE,
                key=(new_job,),
                taskid=task_id,
                subject=new_job,
                cause=event,
            )
            apply_job_created(uow.session, created)
            ids.append(new_job)
            uow.emit(created, Topic.JOBGEN_EVENTS)
        uow.emit(
            TaskJobsReady.create(
                TaskJobsReadyData(task_id=task_id, job_ids=ids),
                source=SOURCE,
                key=(task_id,),
                taskid=task_id,
                cause=event,
            ),
            Topic.JOBGEN_EVENTS,
        )
    log.info("task %s: %d jobs", task_id, len(ids))
    return ids
