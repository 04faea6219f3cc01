"""GPU matching with NVML: a run goes to a GPU whose free memory fits it, else it waits.

NVML (``nvidia-ml-py``, in the ``gpu`` extra) reads free memory without importing torch, so the
scheduler stays light. With no NVIDIA driver there is no GPU to wait for: runs use the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    free_mib: int


def visible_gpus() -> list[Gpu] | None:
    """The GPUs and their free memory; None when this machine has no usable NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            gpus.append(Gpu(index, int(memory.free) // (1024 * 1024)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def choose_device(gpus: list[Gpu] | None, min_free_mib: int) -> str | None:
    """``cuda:N`` with the most free memory that fits, ``cpu`` without GPUs, None to wait."""
    if not gpus:
        return "cpu"
    fitting = [gpu for gpu in gpus if gpu.free_mib >= min_free_mib]
    if not fitting:
        return None
    return f"cuda:{max(fitting, key=lambda gpu: gpu.free_mib).index}"
