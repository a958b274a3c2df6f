"""How big an opaque model is: parameters, nonzeros, sparsity and MACs of ONNX, TorchScript and torch.export models.

Eager models are measured module by module (``robusteval.pruning.stats``); these formats have no
``nn.Conv2d``/``nn.Linear`` to hook, so the same figures come from what they do hold:

- TorchScript and torch.export programs run one forward pass on a batch of 1 under a dispatch
  mode that sees every aten op: each convolution and matrix product adds its MACs (outputs x
  reduction length), and the parameter it reads as weight is one "layer" for sparsity.
- ONNX graphs: parameters are the float initializers (BatchNormalization running statistics, which
  eager counts as buffers, excluded); MACs come from ONNX shape inference with the input fixed to
  the example's shape at batch 1, over Conv, Gemm and MatMul nodes whose weight is an initializer
  (per image: every dimension of the output but the first, the batch, which may stay symbolic).

Sparsity is 1 - nonzero / size over those weight tensors; MACs per input image. Note that
``torch.onnx.export`` folds BatchNorm into the preceding convolution by default, so an exported
graph holds each convolution's bias instead of the BatchNorm's scale and shift: its figures are those
of the model it ships.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.utils._python_dispatch import TorchDispatchMode

from robusteval.errors import RobustEvalError, describe

aten = torch.ops.aten
_CONVOLUTIONS = (aten.convolution.default, aten._convolution.default, aten.conv1d.default, aten.conv2d.default,
                 aten.conv3d.default)
_WEIGHT_ARG = {**dict.fromkeys(_CONVOLUTIONS, 1), aten.mm.default: 1, aten.addmm.default: 2, aten.bmm.default: 1,
               aten.matmul.default: 1, aten.linear.default: 1}
_BN_STATS = {3, 4}  # BatchNormalization inputs: X, scale, B, input_mean, input_var


def is_opaque(model: nn.Module) -> bool:
    """Whether ``model`` has no eager Conv/Linear module to hook (ONNX, TorchScript, torch.export)."""
    return not any(isinstance(m, (_ConvNd, nn.Linear)) for m in model.modules())


def opaque_size(model: nn.Module, example_input: torch.Tensor) -> dict:
    """``params``, ``nonzero_params``, ``sparsity``, ``macs``, ``macs_effective``, ``layer_sparsity`` and
    ``collapsed_layers`` of an ONNX model (found inside wrappers) or a TorchScript/torch.export program."""
    path = _onnx_path(model)
    weights, total, effective = (_onnx_layers(path, example_input) if path is not None
                                 else _traced_layers(model, example_input))
    layer_sparsity = {name: 1.0 - nonzero / size for name, (size, nonzero) in weights.items()}
    size, kept = sum(s for s, _ in weights.values()), sum(n for _, n in weights.values())
    params, nonzero = _onnx_params(path) if path is not None else _torch_params(model)
    return {"params": params, "nonzero_params": nonzero, "sparsity": 1.0 - kept / size if size else None,
            "macs": total, "macs_effective": effective, "layer_sparsity": layer_sparsity,
            "collapsed_layers": [n for n, s in layer_sparsity.items() if s >= 1.0]}


def _onnx_path(model: nn.Module) -> Path | None:
    return next((m.path for m in model.modules() if getattr(m, "differentiable", True) is False
                 and isinstance(getattr(m, "path", None), Path)), None)


def _torch_params(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int((p != 0).sum()) for p in params)


class _Counter(TorchDispatchMode):
    """MACs of every convolution and matrix product; the parameter each reads as its weight."""

    def __init__(self, owners: dict[int, str]) -> None:
        super().__init__()
        self.owners, self.total, self.effective = owners, 0, 0.0
        self.layers: dict[str, tuple[int, int]] = {}

    def __torch_dispatch__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None):
        out = func(*args, **(kwargs or {}))
        position = _WEIGHT_ARG.get(func)
        if position is not None:
            weight = args[position]
            data = args[0] if func is not aten.addmm.default else args[1]
            count = out.numel() * (weight[0].numel() if func in _CONVOLUTIONS
                                   else data.shape[-1])
            nonzero = int((weight != 0).sum())
            self.total += count
            self.effective += count * nonzero / weight.numel()
            name = self.owners.get(weight.untyped_storage().data_ptr())
            if name is not None:
                self.layers[name] = (weight.numel(), nonzero)
        return out


def _traced_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[dict[str, tuple[int, int]], int, float]:
    owners = {p.untyped_storage().data_ptr(): name.removesuffix(".weight") for name, p in model.named_parameters()}
    counter = _Counter(owners)
    with torch.inference_mode(), counter:
        model(example_input[:1])
    return counter.layers, counter.total, counter.effective


def _onnx_graph(path: Path):  # -> onnx.ModelProto
    try:
        import onnx
    except ImportError:
        raise RobustEvalError(f"{path}: counting its parameters needs onnx: pip install 'robusteval[onnx]'") from None
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own types
        raise RobustEvalError(f"{path} is not a readable ONNX model: {describe(exc)}") from exc


def _float_initializers(graph) -> dict:  # name -> numpy array
    from onnx import TensorProto, numpy_helper

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type in floats}


def _onnx_params(path: Path) -> tuple[int, int]:
    graph = _onnx_graph(path).graph
    stats = {name for node in graph.node if node.op_type == "BatchNormalization"
             for i, name in enumerate(node.input) if i in _BN_STATS}
    arrays = [a for name, a in _float_initializers(graph).items() if name not in stats]
    return sum(int(a.size) for a in arrays), sum(int((a != 0).sum()) for a in arrays)


def _onnx_layers(path: Path, example_input: torch.Tensor
                 ) -> tuple[dict[str, tuple[int, int]], int | None, float | None]:
    """Weight sizes and nonzeros by layer, and MACs (None when shape inference leaves an output unknown)."""
    import onnx

    model = _onnx_graph(path)
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, *example_input.shape[1:])):
        dim.Clear()
        dim.dim_value = size
    del graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception as exc:  # an invalid graph fails inference in many ways
        raise RobustEvalError(f"{path}: ONNX shape inference failed, so its MACs are unknown: {describe(exc)}") from exc
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output, *inferred.input]}
    weights = _float_initializers(graph)
    layers: dict[str, tuple[int, int]] = {}
    total, effective, unknown = 0, 0.0, False
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        name = next((n for n in node.input if n in weights), None)
        out = shapes.get(node.output[0])
        if name is None:
            continue
        if not out or None in out[1:]:  # the batch (first) dimension may stay symbolic, no other
            unknown = True
            continue
        weight = weights[name]
        per_output = (math.prod(weight.shape[1:]) if node.op_type == "Conv"
                      else _reduction(node, weight, list(node.input).index(name)))
        count = math.prod(out[1:]) * per_output
        nonzero = int((weight != 0).sum())
        layers[name.removesuffix(".weight")] = (int(weight.size), nonzero)
        total += count
        effective += count * nonzero / weight.size
    return (layers, None, None) if unknown else (layers, total, effective)


def _reduction(node, weight, position: int) -> int:
    """The reduction length of a Gemm/MatMul whose initializer ``weight`` is input ``position``."""
    trans = {a.name: a.i for a in node.attribute}
    if node.op_type == "Gemm":
        transposed = trans.get("transB" if position == 1 else "transA", 0)
        return weight.shape[1 if transposed == (position == 1) else 0]
    return weight.shape[-2] if position == 1 else weight.shape[-1]
