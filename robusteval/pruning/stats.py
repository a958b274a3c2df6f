"""What a (pruned) model costs: parameters, nonzeros, MACs, measured CPU latency, layer sparsity."""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from robusteval.pruning.masks import PRUNABLE_TYPES

LATENCY_BATCHES = {"batch_1": 1, "batch_128": 128}


def macs(model: nn.Module, example_input: torch.Tensor) -> tuple[int, float]:
    """Multiply-accumulates of Conv2d/Linear layers per input image: (dense, nonzero-weighted)."""
    total, effective = [0], [0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        w = module.weight
        per_output = w[0].numel()  # in_channels/groups × kernel area, or in_features
        count = output.numel() // output.shape[0] * per_output
        total[0] += count
        effective[0] += count * float((w != 0).sum()) / w.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total[0], effective[0]


def latency_ms(model: nn.Module, example_input: torch.Tensor, *, repeats: int = 5) -> dict[str, float]:
    """Median CPU wall time (ms) of a forward pass at batch 1 and batch 128 (one warm-up each)."""
    cpu = copy.deepcopy(model).cpu().eval()
    one = example_input[:1].detach().cpu()
    out = {}
    with torch.inference_mode():
        for key, size in LATENCY_BATCHES.items():
            x = one.expand(size, *one.shape[1:]).contiguous()
            cpu(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                cpu(x)
                times.append((time.perf_counter() - start) * 1e3)
            out[key] = statistics.median(times)
    return out


def model_info(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    dense: nn.Module | None = None,
    prunable: Sequence[str] | None = None,
    measure_latency: bool = True,
    latency_repeats: int = 5,
    dense_latency: dict[str, float] | None = None,
) -> dict:
    """JSON-able cost summary of ``model``; sparsity and speed-up are relative to ``dense`` when given.

    ``prunable`` names the Conv2d/Linear layers that count as prunable (default: all of them).
    Layer sparsity is 1 - nonzero(pruned layer) / numel(dense layer), so removed channels count
    as pruned; a layer that is gone or all zero is "collapsed". ``dense_latency`` reuses an
    earlier measurement of the dense model instead of timing it again.
    """
    modules = dict(model.named_modules())
    reference = dict((dense or model).named_modules())
    names = list(prunable) if prunable is not None else [
        n for n, m in reference.items() if isinstance(m, PRUNABLE_TYPES)]
    layer_sparsity, kept, total = {}, 0, 0
    for name in names:
        size = reference[name].weight.numel()
        nonzero = int((modules[name].weight != 0).sum()) if name in modules else 0
        layer_sparsity[name] = 1.0 - nonzero / size
        kept += nonzero
        total += size
    dense_macs, effective_macs = macs(model, example_input)
    params = sum(p.numel() for p in model.parameters())
    info: dict = {
        "sparsity": 1.0 - kept / total if total else 0.0,
        "params": params,
        "nonzero_params": int(sum(int((p != 0).sum()) for p in model.parameters())),
        "macs": dense_macs,
        "macs_effective": effective_macs,
        "layer_sparsity": layer_sparsity,
        "collapsed_layers": [n for n, s in layer_sparsity.items() if s >= 1.0],
    }
    if dense is not None:
        dense_params = sum(p.numel() for p in dense.parameters())
        info["params_reduction"] = 1.0 - params / dense_params
        info["macs_reduction"] = 1.0 - dense_macs / macs(dense, example_input)[0]
    if measure_latency:
        info["latency_ms"] = latency_ms(model, example_input, repeats=latency_repeats)
        if dense is not None:
            base = dense_latency or latency_ms(dense, example_input, repeats=latency_repeats)
            info["speedup"] = {k: base[k] / v for k, v in info["latency_ms"].items()}
    return info
