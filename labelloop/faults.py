"""Crash points for fault tests: a process dies like ``kill -9`` at a named step, once.

Set ``LABELLOOP_FAULT_CRASH_AT`` to a point name (``<consumer>.before-commit``,
``<consumer>.after-commit``) and ``LABELLOOP_FAULT_MARKER`` to a file path: the first process
to reach that point creates the file and exits with status 137 without any clean-up; later
ones (the restarted process) carry on. Read straight from the environment on purpose: this is
a test hook, not configuration, and it costs one dict lookup when unset.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_EXIT_STATUS = 137


def crash_point(name: str) -> None:
    if os.environ.get("LABELLOOP_FAULT_CRASH_AT") != name:
        return
    marker = os.environ.get("LABELLOOP_FAULT_MARKER")
    if marker:
        try:
            Path(marker).touch(exist_ok=False)
        except FileExistsError:
            return
    os._exit(CRASH_EXIT_STATUS)
