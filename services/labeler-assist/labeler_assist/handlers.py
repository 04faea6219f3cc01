"""labeler-assist's handler: keep its own view of the frames and jobs announced upstream.

What it does with them is elsewhere: labels are taken by :mod:`labeler_assist.labels`, frames
pre-annotated by :mod:`labeler_assist.preannotation`.
"""

from __future__ import annotations

from collections.abc import Sequence

from labeler_assist import IDENTITY
from labelloop.messaging.outbox import Transactions
from schemas.events import FrameProcessed, JobCreated


def remember(events: Sequence[FrameProcessed | JobCreated], transactions: Transactions) -> None:
    """Project frames and jobs into labeler-assist's own view, a batch in one transaction."""
    transactions.project(IDENTITY.consumer, events, autoflush=False)
