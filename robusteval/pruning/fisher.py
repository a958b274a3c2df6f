"""Fisher pruning (Theis et al. 2018, "Faster gaze prediction with dense networks and Fisher pruning"),
channel by channel while fine-tuning, as Crowley et al. (2018, "A closer look at structured pruning";
"Pruning neural networks: is it time to nip it in the bud?") use it in BayesWatch/pytorch-prunes.

The signal of channel k is the estimated loss increase when its feature map a_k is removed,

    Δ_k = 1/(2N) Σ_n g_nk²,    g_nk = Σ_{spatial} a_nk · ∂L/∂a_nk,

accumulated over the fine-tuning steps since the last removal (the reference code's ``running_fisher``,
divided by the number of steps). As in that code, a is the (masked) input of the layers that read the
channel (after BatchNorm and the nonlinearity) and ∂L/∂a the gradient of the batch's mean loss; a channel
read by several layers sums their terms before squaring. Every ``fisher_prune_every`` steps the channel
with the smallest Δ_k - β·ΔC_k is switched off (its input masked to zero; ΔC_k is the fraction of the
model's MACs its removal saves, β = ``fisher_flops_penalty``, 0 by default as in Crowley et al.), the
signals are reset, and fine-tuning goes on with the same optimizer. At the end the masked channels are
really removed through torch-pruning's dependency graph (``structured.remove_channels``, checked against
the masked model). The removable channels are those of ``structured.channel_groups`` (inside residual
blocks, Crowley et al.'s ``MaskBlock`` channels); each keeps at least one channel.

``ratio`` is the fraction of all removable channels removed (chosen globally, unlike ``l1_filter``'s
same fraction per layer).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from robusteval.errors import RobustEvalError
from robusteval.pruning.importance import PruneContext, PruningMethod
from robusteval.pruning.recovery import finetune
from robusteval.pruning.registry import PRUNING_METHODS
from robusteval.pruning.stats import macs
from robusteval.pruning.structured import ChannelGroup, remove_channels, removable_groups


class FisherProbe:
    """Channel masks on the inputs of every group's consumers, and the Fisher signal of each channel.

    A forward pre-hook multiplies each consumer's input by its channels' masks (a removed channel reads
    as zero, like the reference code's ``MaskBlock``) and hooks the gradient of that masked input.
    """

    def __init__(self, groups: list[ChannelGroup]) -> None:
        self.groups = {g.name: g for g in groups}
        self.keep = {g.name: torch.ones(g.channels, dtype=torch.bool) for g in groups}
        self.fisher = {g.name: torch.zeros(g.channels, dtype=torch.float64) for g in groups}
        self._signal: dict[str, torch.Tensor] = {}
        self._handles = [
            consumer.register_forward_pre_hook(functools.partial(self._mask, g.name, idxs, torch.as_tensor(roots)))
            for g in groups for consumer, idxs, roots in g.consumers]

    def _mask(self, name: str, idxs: list[int], roots: torch.Tensor, _module: nn.Module,
              inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        scale = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
        scale[idxs] = self.keep[name][roots].to(x.device, x.dtype)
        x = x * scale.view(1, -1, *([1] * (x.dim() - 2)))
        if x.requires_grad:
            x.register_hook(functools.partial(self._gradient, name, idxs, roots, x.detach()))
        return (x, *inputs[1:])

    def _gradient(self, name: str, idxs: list[int], roots: torch.Tensor, act: torch.Tensor,
                  grad: torch.Tensor) -> None:
        per_index = (act * grad).flatten(2).sum(2) if act.dim() > 2 else act * grad  # Σ_spatial a·g
        signal = self._signal.setdefault(
            name, torch.zeros(act.shape[0], self.groups[name].channels, dtype=torch.float64))
        signal.index_add_(1, roots, per_index[:, idxs].detach().double().cpu())

    def accumulate(self) -> None:
        """Add ½·mean_n g_nk² of the backward pass just done to each channel's signal."""
        for name, signal in self._signal.items():
            self.fisher[name] += 0.5 * signal.pow(2).mean(0)
        self._signal.clear()

    def remove_weakest(self, steps: int, penalty: dict[str, float]) -> tuple[str, int]:
        """Switch off the live channel with the smallest Δ_k - penalty (Δ averaged over ``steps``) in a
        group that keeps another, and reset every signal. Returns (group name, channel)."""
        best: tuple[float, str, int] | None = None
        for name, keep in self.keep.items():
            if int(keep.sum()) <= 1:
                continue
            score = self.fisher[name] / steps - penalty.get(name, 0.0)
            score[~keep] = torch.inf
            k = int(torch.argmin(score))
            if best is None or float(score[k]) < best[0]:
                best = (float(score[k]), name, k)
        if best is None:
            raise ValueError("every group is down to one channel")
        self.keep[best[1]][best[2]] = False
        for fisher in self.fisher.values():
            fisher.zero_()
        return best[1], best[2]

    def plan(self) -> dict[str, list[int]]:
        """The switched-off channels of each group."""
        return {name: torch.nonzero(~keep).flatten().tolist() for name, keep in self.keep.items() if not keep.all()}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def channel_macs(model: nn.Module, groups: list[ChannelGroup], example_input: torch.Tensor) -> dict[str, float]:
    """MACs per image saved by removing one channel of each group: its producer's share plus the share
    of every consumer input that reads it (as :func:`robusteval.pruning.stats.macs` counts them)."""
    out: dict[nn.Module, int] = {}
    layers = {g.producer for g in groups} | {c for g in groups for c, _, _ in g.consumers}
    handles = [m.register_forward_hook(lambda m, _i, o: out.__setitem__(m, o[0].numel())) for m in layers]
    try:
        model.eval()(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
    saved = {}
    for g in groups:
        total = out[g.producer] / g.channels * g.producer.weight[0].numel()
        for consumer, idxs, _ in g.consumers:
            per_index = out[consumer] * consumer.weight[0].numel() / consumer.weight.shape[1]
            total += per_index * len(idxs) / g.channels
        saved[g.name] = float(total)
    return saved


class FisherPruning(PruningMethod):
    """Theis et al.'s Fisher pruning with Crowley et al.'s schedule (see the module docstring)."""

    structured = True
    needs_data = True
    reference = ("Theis et al. 2018, Fisher pruning, as in Crowley et al. 2018, "
                 "A closer look at structured pruning for neural network compression")

    def prune(self, model: nn.Module, ratio: float, ctx: PruneContext) -> None:
        graph, groups = removable_groups(model, ctx)
        base = sum(ctx.base_channels.setdefault(g.name, g.channels) for g in groups)
        now = sum(g.channels for g in groups)
        count = min(round(ratio * base) - (base - now), now - len(groups))
        if count <= 0:
            return
        if ctx.train_data is None:
            raise RobustEvalError("pruning method 'fisher' needs training data, got none (pass --train-data)")
        settings = ctx.settings
        beta, every = settings.fisher_flops_penalty, settings.fisher_prune_every
        total = macs(model, ctx.example_input)[0]
        penalty = {name: beta * saved / total for name, saved in channel_macs(model, groups, ctx.example_input).items()}
        probe = FisherProbe(groups)

        def after_step(step: int) -> None:
            probe.accumulate()
            if (step + 1) % every == 0:
                probe.remove_weakest(every, penalty)

        try:
            ctx.train_steps += finetune(model, ctx.train_data, settings.finetune, steps=count * every,
                                        seed=settings.seed + ctx.train_steps, after_step=after_step)
            with torch.no_grad():
                masked = model.eval()(ctx.example_input)
        finally:
            probe.close()
        remove_channels(model, graph, groups, probe.plan(), ctx.example_input)
        with torch.no_grad():
            err = float((model(ctx.example_input) - masked).abs().max())
        if not err <= 1e-4 * (1.0 + float(masked.abs().max())):
            raise RobustEvalError(f"fisher: removing the masked channels changed the output by {err:.3g} (a layer "
                                  "between a channel and its readers does not map 0 to 0)")


PRUNING_METHODS.add("fisher", FisherPruning())
