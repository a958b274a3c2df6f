"""Recovery after pruning: fine-tuning with masks held at zero, and BatchNorm re-calibration."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robusteval.data.arrays import LabeledArrays
from robusteval.pruning.masks import Masks, apply_masks
from robusteval.pruning.settings import FinetuneSettings

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, *, padding: int = 4) -> torch.Tensor:
    """Batched CIFAR augmentation: zero-pad, random crop back to size, random horizontal flip."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].to(images.device)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    out = padded[batch, chans, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    out[flip] = out[flip].flip(-1)
    return out


def _batches(data: LabeledArrays, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless shuffled batches of row indices (reshuffled every epoch)."""
    while True:
        order = rng.permutation(len(data))
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield np.sort(order[start: start + batch_size])


def finetune(
    model: nn.Module,
    data: LabeledArrays,
    settings: FinetuneSettings,
    *,
    layers: Mapping[str, nn.Module] | None = None,
    masks: Masks | None = None,
    seed: int = 0,
    steps: int | None = None,
    after_step: Callable[[int], None] | None = None,
) -> int:
    """Fine-tune ``model`` in place (SGD + cosine LR); removed weights are re-zeroed after every step.
    Batches, augmentation and the model's own draws (dropout) are seeded by ``seed``; the caller's RNG
    state is restored afterwards.

    Returns the number of optimizer steps taken: ceil(min(epochs × len(data), max_images) / batch_size),
    or ``steps`` when given; then the learning rate stays constant (training interleaved with pruning,
    as in Crowley et al.'s code) and ``after_step(i)`` is called after step i.
    """
    constant = steps is not None
    if steps is None:
        images = settings.epochs * len(data)
        if settings.max_images is not None:
            images = min(images, settings.max_images)
        steps = math.ceil(images / settings.batch_size)
    if steps <= 0:
        return 0
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0) if constant else \
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(data, min(settings.batch_size, len(data)), np.random.default_rng(seed))
    model.train()
    with torch.enable_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for step in range(steps):
            idx = next(batches)
            x, y = data.images(idx).to(device), data.labels(idx).to(device)
            if settings.augment:
                x = random_crop_flip(x, gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
            if masks is not None and layers is not None:
                apply_masks(layers, masks)
            if after_step is not None:
                after_step(step)
    model.eval()
    return steps


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: LabeledArrays, *, batches: int, batch_size: int, seed: int = 0) -> bool:
    """Reset BatchNorm running statistics and recompute them as the plain average over ``batches``
    unlabeled batches (momentum=None: cumulative moving average). Returns False when there is no BN."""
    norms = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not norms:
        return False
    device = next(model.parameters()).device
    saved = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    rows = _batches(data, min(batch_size, len(data)), np.random.default_rng(seed))
    for _ in range(batches):
        model(data.images(next(rows)).to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()
    return True
