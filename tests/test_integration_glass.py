"""Glass blur against a literal port of the reference loop on real CIFAR-10 (JPEG q75) test images."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glass_reference import numpy_draws, reference_glass_blur, replayed_draws
from robusteval.data.corruptions import condition_seed, corrupt
from robusteval.data.corruptions.params import CIFAR
from robusteval.data.imagefolder import load_imagefolder
from robusteval.models.bundled import BUNDLED_MODEL
from robusteval.models.cifar import CifarResNet

pytestmark = pytest.mark.integration

N_IMAGES = 500
TOLERANCE = 0.03
"""Largest accuracy gap accepted between this implementation and the literal port (independent draws)."""


@pytest.fixture(scope="module")
def real_images(shared_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, torch.Tensor]:
    """500 class-balanced test images as uint8 NHWC, with labels."""
    root = tmp_path_factory.mktemp("cifar-glass")
    with tarfile.open(shared_cifar) as tar:
        tar.extractall(root, filter="data", members=[m for m in tar if "/test/" in m.name or m.isdir()])
    data = load_imagefolder(next(root.iterdir()) / "test").stratified(N_IMAGES, seed=0)
    return data.x, torch.from_numpy(data.y).long()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    if not BUNDLED_MODEL.is_file():
        pytest.skip("the bundled model is missing")
    net = CifarResNet(20, 10, "A")
    net.load_state_dict(load_file(str(BUNDLED_MODEL)))
    return net.eval()


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("severity", range(1, 6))
def test_same_offsets_give_the_reference_images(real_images, severity: int) -> None:
    images = real_images[0][:40]
    params = CIFAR["glass_blur"][severity - 1]
    _, delta, iterations = params
    seed = condition_seed("glass_blur", severity, 0)
    offsets = torch.randint(-delta, delta, (iterations, len(images), 32 - 2 * delta, 32 - 2 * delta, 2),
                            generator=torch.Generator().manual_seed(seed))
    out = corrupt(_as_batch(images), "glass_blur", severity, seed=seed).permute(0, 2, 3, 1).double().numpy() * 255
    expected = np.stack([reference_glass_blur(img, params, replayed_draws(offsets[:, n].numpy()))
                         for n, img in enumerate(images)])
    diff = np.abs(out - expected)
    assert diff.max() <= 1.0 + 1e-3  # flat regions truncate to v or v-1 by float noise (see the unit test)
    assert (diff > 1e-3).mean() < 0.03


@pytest.mark.parametrize("severity", range(1, 6))
def test_accuracy_under_glass_blur_matches_the_literal_port(real_images, model, severity: int) -> None:
    images, labels = real_images
    params = CIFAR["glass_blur"][severity - 1]
    ours = corrupt(_as_batch(images), "glass_blur", severity, seed=condition_seed("glass_blur", severity, 0))
    rng = np.random.RandomState(severity)
    reference = np.stack([np.uint8(reference_glass_blur(img, params, numpy_draws(rng))) for img in images])
    ours_acc, ref_acc = _accuracy(model, ours, labels), _accuracy(model, _as_batch(reference), labels)
    print(f"glass_blur severity {severity}: ours {ours_acc:.3f} literal port {ref_acc:.3f} "
          f"diff {100 * (ours_acc - ref_acc):+.1f} points")
    assert abs(ours_acc - ref_acc) <= TOLERANCE
