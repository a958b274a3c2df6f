"""The reference model shipped in the package: CIFAR ResNet-20 trained on the CIFAR-10 (JPEG q75) copy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_ARCH = "cifar_resnet20"
BUNDLED_MODEL = ASSETS / "cifar_resnet20.safetensors"
BUNDLED_META = ASSETS / "cifar_resnet20.json"


def bundled_metadata() -> dict[str, Any]:
    """Architecture, classes, test accuracy and training recipe of the bundled model."""
    return json.loads(BUNDLED_META.read_text())
