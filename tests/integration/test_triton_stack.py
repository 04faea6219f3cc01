"""The real tritonserver from the nvidia-pytriton wheel serves a Python-backend model.

The Triton venv takes about a minute to install, so the test reuses the one under the repo's
``var/`` (the one ``labelloop stack up`` uses) and runs on ports of its own.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from labelloop.config import Settings
from labelloop.stack.base import port_open
from labelloop.stack.triton import TritonComponent

_MODEL_PY = b"""\
import numpy as np
import onnxruntime  # noqa: F401 - the load fails unless the Triton venv provides it
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            numpy_version = np.array([np.__version__.encode()], dtype=np.object_)
            outputs = [pb_utils.Tensor("y", x * 2), pb_utils.Tensor("numpy", numpy_version)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""

_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [
        {"name": "y", "data_type": "TYPE_FP32", "dims": [-1]},
        {"name": "numpy", "data_type": "TYPE_STRING", "dims": [1]},
    ],
}


class _TestTriton(TritonComponent):
    """Its own pid file, log and model folder, so a Triton started by the stack is left alone."""

    name = "triton-test"


def _wait_ready(triton: TritonComponent, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not triton.healthy():
        if triton.daemon.exited_early() or time.monotonic() > deadline:
            pytest.fail(f"tritonserver did not become ready:\n{triton.daemon.log_tail()}")
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.triton
def test_triton_serves_a_python_backend_model_from_its_own_venv() -> None:
    settings = Settings(triton_http_port=18000, triton_grpc_port=18001, triton_metrics_port=18002)
    triton = _TestTriton(settings)
    triton.install(print)
    triton.prepare(print)
    triton.daemon.stop()  # a server left behind by an interrupted run
    for port in (settings.triton_http_port, settings.triton_grpc_port):
        assert not port_open(settings.triton_host, port), f"port {port} is already in use"

    argv, env = triton.command()
    triton.daemon.start(argv, env=env)
    try:
        _wait_ready(triton, settings.stack_start_timeout_s)
        assert triton.version() is not None

        client = grpcclient.InferenceServerClient(
            f"{settings.triton_host}:{settings.triton_grpc_port}"
        )
        try:
            client.load_model(
                "double", config=json.dumps(_CONFIG), files={"file:1/model.py": _MODEL_PY}
            )
            assert client.is_model_ready("double")

            x = grpcclient.InferInput("x", [3], "FP32")
            x.set_data_from_numpy(np.array([1.0, 2.5, -3.0], dtype=np.float32))
            result = client.infer("double", [x])
        finally:
            client.close()

        np.testing.assert_array_equal(result.as_numpy("y"), [2.0, 5.0, -6.0])
        # The model ran on the Triton venv's numpy, not the test's numpy 2.
        assert result.as_numpy("numpy")[0].decode().startswith("1.")
    finally:
        triton.daemon.stop()
