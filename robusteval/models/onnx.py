"""ONNX models, the artifact people deploy, run through onnxruntime (CPU) behind an ``nn.Module``.

The module is forward-only: onnxruntime gives no gradients, so the adversarial stage skips
white-box attacks for it (transfer attacks crafted on a torch reference still measure it).
``batch`` is the graph's fixed batch size (None when dynamic); the loader wraps a fixed one in
:class:`robusteval.models.loading.FixedBatch`, so it runs on any batch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from robusteval.errors import RobustEvalError, describe

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxModel(nn.Module):
    """``model(x)`` = the first output of the ONNX graph at ``path`` on ``x`` (float32 logits)."""

    differentiable = False

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = _session(self.path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RobustEvalError(f"{self.path}: expected an ONNX graph with one input (the images), "
                                  f"got {len(inputs)}: {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        if inputs[0].type not in _DTYPES:
            raise RobustEvalError(f"{self.path}: expected a float image input, got {inputs[0].type}")
        self.dtype = _DTYPES[inputs[0].type]
        first = inputs[0].shape[0] if inputs[0].shape else None
        self.batch = first if isinstance(first, int) and first > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RobustEvalError(f"{self.path} runs in onnxruntime and has no gradients; white-box attacks need "
                                  "the torch model")
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.dtype)
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def __deepcopy__(self, memo: dict) -> OnnxModel:
        """A fresh session on the same file (an InferenceSession cannot be copied)."""
        return OnnxModel(self.path).train(self.training)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, batch={self.batch or 'dynamic'}"


def _session(path: Path):  # -> onnxruntime.InferenceSession (optional dependency)
    try:
        import onnxruntime as ort
    except ImportError:
        raise RobustEvalError(f"{path} is an ONNX model; running it needs onnxruntime: "
                              "pip install 'robusteval[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for corrupt or unsupported graphs
        raise RobustEvalError(f"{path} is not a readable ONNX model: {describe(exc)}") from exc
