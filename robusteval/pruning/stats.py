"""What a (pruned) model costs: parameters, nonzeros, MACs, latency measured on its device, layer sparsity."""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robusteval.device import model_device, synchronize
from robusteval.pruning.masks import PRUNABLE_TYPES

LATENCY_BATCHES = {"batch_1": 1, "batch_128": 128}
SMALLEST = min(LATENCY_BATCHES, key=LATENCY_BATCHES.get)  # always timed (one warm-up pass on CPU is at it)
SAME_KERNELS = "dense kernels: same MACs as dense, zeros cost as much as weights (no sparse runtime)"
MIN_PAIRS = 3  # runs (pairs) below which a speed-up has no interval worth the name
CUDA_WARMUP = 3  # forward passes per model and batch size before timing on a GPU (kernel selection, caches)


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
            model.eval()(example_input[:1].to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return total[0], effective[0]


def _spread(values: Sequence[float]) -> list[float]:
    """[first quartile, third quartile] (inclusive method; [v, v] for one value)."""
    if len(values) < 2:
        return [values[0], values[0]]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [q1, q3]


def _timed(model: nn.Module, x: torch.Tensor) -> float:
    """Wall time (ms) of one forward pass on the CPU, and on MPS between synchronizes (its kernels run
    asynchronously); on CUDA, between events after a synchronize."""
    if x.device.type != "cuda":
        synchronize(x.device)
        start = time.perf_counter()
        model(x)
        synchronize(x.device)
        return (time.perf_counter() - start) * 1e3
    with torch.cuda.device(x.device):  # events record on the current stream of the input's device
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        model(x)
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end)


def latency_ms(model: nn.Module, example_input: torch.Tensor, *, repeats: int = 5,
               dense: nn.Module | None = None, budget_s: float | None = None,
               share: float | None = None, evaluated: int | None = None) -> dict[str, dict]:
    """Time (ms) of a forward pass at batch 1 and batch 128: median and IQR over up to ``repeats`` runs.

    ``budget_s`` bounds the time spent per model (split evenly between the batch sizes, warm-up
    not counted), as ``torch.utils.benchmark``'s ``blocked_autorange`` bounds its run time: runs (or
    pairs) are taken until the budget is spent, at least one and at most ``repeats``; the number taken
    is ``latency_runs``. None: always ``repeats``. With ``share`` and ``evaluated`` (the images the audit
    evaluates each model on), the runs are also proportionate to the audit (:func:`affordable_runs`): a
    batch size that cannot have one run is not timed, and its key is missing.

    Timed on ``model``'s device (:func:`robusteval.device.model_device`), with ``dense`` and the input moved there:
    CPU wall time after one warm-up pass at batch 1 (before the first batch size only: the allocator and lazy
    initialisation are warm after it), or on CUDA the time between CUDA events around each pass,
    synchronized, after ``CUDA_WARMUP`` warm-up passes per batch size (kernels are chosen per shape;
    MPS: wall time between synchronizes, as many).

    With ``dense``, both models are timed in pairs, in alternating order (dense first on even
    repeats, the model first on odd ones), so a load change on a shared machine hits both
    alike; the speed-up is the median of the per-pair ratios dense / model, with its IQR.
    Returns ``{"latency_ms", "latency_iqr_ms", "latency_runs"}`` per batch key, plus ``"dense_latency_ms"``,
    ``"dense_latency_iqr_ms"``, ``"speedup_measured"`` and ``"speedup_iqr"`` with ``dense``.
    """
    device = model_device(model)
    models = [copy.deepcopy(m).to(device).eval() for m in ([model] if dense is None else [model, dense])]
    one = example_input[:1].detach().to(device)
    warmups = {key: CUDA_WARMUP if device.type != "cpu" else int(key == SMALLEST) for key in LATENCY_BATCHES}
    runs = {key: affordable_runs(size, warmups[key], repeats, share, evaluated)
            for key, size in LATENCY_BATCHES.items()}
    times: dict[str, list[list[float]]] = {}
    with torch.inference_mode():
        for key, size in LATENCY_BATCHES.items():
            if runs[key] == 0:
                continue
            x = one.expand(size, *one.shape[1:]).contiguous()
            for _ in range(warmups[key]):  # on CPU, once at batch 1: warm for every batch size after it
                for m in models:
                    m(x)
            times[key] = _pairs(models, x, runs[key], None if budget_s is None else budget_s / len(LATENCY_BATCHES))
    return _summarised(times, paired=dense is not None)


def affordable_runs(size: int, warmups: int, repeats: int, share: float | None, evaluated: int | None) -> int:
    """Runs (pairs) to time at batch ``size``: ``repeats``, or fewer so that each model's passes at that size,
    ``warmups`` included, take at most ``share`` of the images the audit evaluates it on (``evaluated``; None,
    or no ``share``: no such bound); 0: not timed. Batch 1 always gets one run (it costs a negligible share
    of any audit), larger batches only what the share affords."""
    if share is None or evaluated is None:
        return repeats
    affordable = int(share * evaluated / size) - warmups
    return min(repeats, max(affordable, 1 if size == LATENCY_BATCHES[SMALLEST] else 0))


def _pairs(models: list[nn.Module], x: torch.Tensor, repeats: int, budget_s: float | None) -> list[list[float]]:
    """Per model, its times (ms) at ``x``: alternating pairs (or runs of one model) until ``budget_s`` is spent,
    at least one and at most ``repeats``."""
    times: list[list[float]] = [[] for _ in models]
    start = time.perf_counter()
    for i in range(repeats):
        order = range(len(models)) if i % 2 == 0 else reversed(range(len(models)))
        for j in order:
            times[j].append(_timed(models[j], x))
        if budget_s is not None and time.perf_counter() - start >= budget_s:
            break
    return times


def _summarised(times: Mapping[str, list[list[float]]], *, paired: bool) -> dict[str, dict]:
    """Medians, IQRs and run counts per batch key; with ``paired``, the dense model's and the speed-ups."""
    out: dict[str, dict] = {}
    for key, (own, *rest) in times.items():
        out.setdefault("latency_ms", {})[key] = statistics.median(own)
        out.setdefault("latency_iqr_ms", {})[key] = _spread(own)
        out.setdefault("latency_runs", {})[key] = len(own)
        if paired:
            ratios = [d / m for d, m in zip(rest[0], own)]
            out.setdefault("dense_latency_ms", {})[key] = statistics.median(rest[0])
            out.setdefault("dense_latency_iqr_ms", {})[key] = _spread(rest[0])
            out.setdefault("speedup_measured", {})[key] = statistics.median(ratios)
            out.setdefault("speedup_iqr", {})[key] = _spread(ratios)
    return out


def speedup_claims(timing: Mapping[str, dict], *, same_kernels: bool) -> tuple[dict[str, float], list[str]]:
    """The speed-up to state per batch key, and warnings where the measurement cannot carry it.

    A model that runs the dense model's kernels (masked weights, same MACs) is 1.0x: zeros
    cost as much as any weight without a sparse runtime, which robusteval never uses. Else
    the measured paired median, flagged when its IQR is wider than its distance from 1, or when
    the time budget or the audit's size (``latency_share``) allowed fewer than ``MIN_PAIRS`` pairs.
    """
    measured = timing["speedup_measured"]
    if same_kernels:
        return {key: 1.0 for key in measured}, []
    warnings = []
    for key, ratio in measured.items():
        runs = timing.get("latency_runs", {}).get(key, MIN_PAIRS)
        if runs < MIN_PAIRS:
            warnings.append(f"latency {key.replace('_', ' ')}: speed-up {ratio:.2f}x from {runs} pair(s) of runs, too "
                            "few for an interval (the time budget or the audit's size allowed no more); raise "
                            "pruning.latency_budget_s or pruning.latency_share")
            continue
        low, high = timing["speedup_iqr"][key]
        if high - low > abs(ratio - 1.0):
            warnings.append(f"latency {key.replace('_', ' ')}: speed-up {ratio:.2f}x with IQR {low:.2f}–{high:.2f}x; "
                            "the spread exceeds the effect (a noisy machine?), so it is not a measured speed-up")
    return dict(measured), warnings


def model_info(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    dense: nn.Module | None = None,
    prunable: Sequence[str] | None = None,
    measure_latency: bool = True,
    latency_repeats: int = 11,
    latency_budget_s: float | None = None,
    latency_share: float | None = None,
    evaluated: int | None = None,
) -> dict:
    """JSON-able cost summary of ``model``; sparsity and speed-up are relative to ``dense`` when given.

    ``prunable`` names the Conv2d/Linear layers that count as prunable (default: all of them).
    Layer sparsity is 1 - nonzero(pruned layer) / numel(dense layer), so removed channels count
    as pruned; a layer that is gone or all zero is "collapsed". Latency is timed paired with
    ``dense`` (``latency_ms``) on ``model``'s device (``latency_device``); ``speedup`` is 1.0 unless
    the model is structurally smaller (``speedup_claims``), and ``latency_warnings`` says where the
    spread exceeds the effect; ``latency_budget_s``, and ``latency_share`` of the estimated evaluation of
    ``evaluated`` images, bound the timing (:func:`latency_ms`).
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
        reference_macs = macs(dense, example_input)[0]  # 0 for an opaque (TorchScript, export, ONNX) reference
        info["params_reduction"] = 1.0 - params / dense_params if dense_params else None
        info["macs_reduction"] = 1.0 - dense_macs / reference_macs if reference_macs else None
    if measure_latency:
        info |= _timing(model, example_input, dense, dense_macs, repeats=latency_repeats, budget_s=latency_budget_s,
                        share=latency_share, evaluated=evaluated)
    return info


def _timing(model: nn.Module, example_input: torch.Tensor, dense: nn.Module | None, dense_macs: int,
            **options: Any) -> dict:
    """``model_info``'s latency entries: :func:`latency_ms` (``options``), the device, and with ``dense`` the
    speed-up to state; ``latency_warnings`` where the table lacks a batch size or a claim lacks support."""
    info: dict = latency_ms(model, example_input, dense=dense, **options)
    info["latency_device"] = str(model_device(model))
    info["sparse_runtime"] = False
    untimed = untimed_warnings(info.get("latency_ms", {}), options["share"], options["evaluated"])
    if dense is not None:
        same_kernels = dense_macs > 0 and dense_macs == macs(dense, example_input)[0]
        info["speedup"], claims = speedup_claims(info, same_kernels=same_kernels)
        info["speedup_basis"] = SAME_KERNELS if same_kernels else "measured: median of paired, alternating runs"
        untimed += claims
    if untimed or dense is not None:
        info["latency_warnings"] = untimed
    return info


def untimed_warnings(latency: Mapping[str, float], share: float | None, evaluated: int | None) -> list[str]:
    """What a latency table lacks: the batch sizes left untimed because one run would have exceeded ``share``
    of the ``evaluated`` images (:func:`affordable_runs`)."""
    return [f"latency {key.replace('_', ' ')}: not timed, since one run of each model would pass {size} images, "
            f"more than pruning.latency_share ({share:g}) of the {evaluated} images the audit evaluates it on; "
            "evaluate more images or raise pruning.latency_share" for key, size in LATENCY_BATCHES.items()
            if key not in latency]
