"""Triton Python-backend model serving one task's YOLO detector; shipped as its ``model.py``.

:func:`labeler_assist.detectors.triton_files` sends this file's text with ``yolo_codec.py`` and
``model.onnx`` in the load request. Triton runs it in its own venv (numpy<2, onnxruntime; see
``labelloop/stack/triton.py``), where ``labeler_assist`` is not installed: the codec is imported
from the model's own folder. Requests carry letterboxed uint8 NHWC images; all requests of a
dynamic batch go through onnxruntime together, and each gets its boxes after NMS, padded to
``max_det`` rows, with their count.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

if TYPE_CHECKING:
    from labeler_assist import yolo_codec
else:
    # The stub does not put the model's folder on sys.path; yolo_codec.py is shipped there.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    yolo_codec = importlib.import_module("yolo_codec")


class TritonPythonModel:
    """One onnxruntime session; thresholds come from the model configuration's parameters."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {name: value["string_value"] for name, value in config["parameters"].items()}
        self.conf = float(parameters["conf"])
        self.iou = float(parameters["iou"])
        self.max_det = int(parameters["max_det"])
        options = ort.SessionOptions()
        # Idle worker threads spin by default: on 2 idle cores that is faster (yolov8n, 640 px:
        # 51 vs 75 ms), but with a training run alongside it is twice as slow (215 vs 117 ms),
        # and here the service, Triton, the trainer and the stack share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if "threads" in parameters:
            options.intra_op_num_threads = int(parameters["threads"])
        providers = [
            name
            for name in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if name in ort.get_available_providers()
        ]
        onnx = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(onnx), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        pixels = yolo_codec.to_nchw(np.concatenate(batches))
        raw = self.session.run(None, {self.input_name: pixels})[0]
        found = yolo_codec.decode(raw, self.conf, self.iou, self.max_det)
        detections = np.zeros((len(found), self.max_det, 6), dtype=np.float32)
        counts = np.zeros((len(found), 1), dtype=np.int32)
        for index, rows in enumerate(found):
            detections[index, : len(rows)] = rows
            counts[index, 0] = len(rows)
        responses = []
        start = 0
        for batch in batches:
            end = start + len(batch)
            outputs = [
                pb_utils.Tensor("detections", detections[start:end]),
                pb_utils.Tensor("count", counts[start:end]),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start = end
        return responses
