"""Integration tests on the shared real CIFAR-10 (JPEG q75) copy; run with ``pytest -m integration``."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from robusteval.cli import main
from robusteval.models.bundled import BUNDLED_MODEL, bundled_metadata
from robusteval.models.cifar import CifarResNet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cifar_test_dir(shared_cifar, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(shared_cifar) as tar:
        tar.extractall(root, filter="data")
    return next(root.iterdir()) / "test"


def _plain_pytorch_accuracy(shared_cifar: Path) -> float:
    """An independent loop: decode the tarball's test JPEGs with PIL, a plain model, argmax."""
    classes = bundled_metadata()["classes"]
    images, labels = [], []
    with tarfile.open(shared_cifar) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] == "test":
                data = tar.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                labels.append(classes.index(parts[-2]))
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    y = torch.tensor(labels)
    model = CifarResNet(20, 10, "A")
    model.load_state_dict(load_file(str(BUNDLED_MODEL)))
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            correct += int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum())
    return correct / len(y)


def test_bundled_model_clean_accuracy_matches_a_plain_loop(shared_cifar, cifar_test_dir, tmp_path):
    if not BUNDLED_MODEL.is_file():
        pytest.skip("the bundled model is missing")
    out = tmp_path / "run"
    code = main(["evaluate", str(BUNDLED_MODEL), "--arch", "cifar_resnet20", "--data",
                 f"imagefolder:{cifar_test_dir}", "--out", str(out), "--quiet", "--no-report"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    accuracy = summary["models"][0]["metrics"]["clean/accuracy"]
    assert abs(accuracy - _plain_pytorch_accuracy(shared_cifar)) <= 1e-6
    assert abs(accuracy - bundled_metadata()["test_accuracy"]) <= 1e-6
    assert summary["models"][0]["metrics"]["clean/top5"] > accuracy
