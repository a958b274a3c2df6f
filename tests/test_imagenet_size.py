"""The 224-px path end to end on the CPU: a torchvision architecture on ImageNet-sized npz data, audited
with corruptions (ImageNet parameters), noise, a pruned member with latency, and an FGSM attack."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision

from robusteval.api import audit
from robusteval.config import AuditConfig, DataSettings, EvaluateSettings, ModelSettings
from robusteval.evaluators.adversarial import AdversarialSettings
from robusteval.evaluators.settings import CorruptionSettings, NoiseSettings
from robusteval.pruning import PruneSettings
from robusteval.pruning.settings import FinetuneSettings

ARCH = "mobilenet_v3_small"
SIDE, N, CLASSES = 224, 20, 10


def _inputs(tmp_path: Path) -> tuple[Path, str]:
    """An untrained torchvision model's state_dict and a class-balanced 224-px uint8 NHWC npz."""
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(torchvision.models.get_model(ARCH, num_classes=CLASSES).state_dict(), weights)
    rng = np.random.default_rng(0)
    data = tmp_path / "imagenet_sized.npz"
    np.savez(data, x=rng.integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8),
             y=np.arange(N) % CLASSES, classes=np.array([f"class{i}" for i in range(CLASSES)]))
    return weights, f"npz:{data}"


def test_a_224px_torchvision_model_is_audited_with_imagenet_parameters(tmp_path: Path) -> None:
    weights, source = _inputs(tmp_path)
    adversarial = AdversarialSettings(attacks=("fgsm",), linf_eps=(1 / 255,), autoattack="off", min_norm=(),
                                      transfer=(), sample_size=4, large_eps=None)
    evaluate = EvaluateSettings(calibration=None, noise=NoiseSettings(eps=(0.0, 0.1)), adversarial=adversarial,
                                corruption=CorruptionSettings(corruptions=("gaussian_noise", "brightness"),
                                                              severities=(3,)))
    pruning = PruneSettings(methods=("magnitude",), ratios=(0.5,), measure_latency=True, latency_repeats=1,
                            latency_share=None, finetune=FinetuneSettings(epochs=0))  # batch 128 on 20 images
    config = AuditConfig(data=DataSettings(source=source, train=None, batch_size=10), device="cpu",
                         model=ModelSettings(arch=f"torchvision:{ARCH}"), evaluate=evaluate, pruning=pruning)
    run = audit(weights, config=config, out=tmp_path / "run", progress=False)

    summary = run.summary
    assert summary["complete"] and not summary["missing"]
    models = summary["models"]
    assert [m["id"] for m in models] == ["dense", "magnitude@0.5"]
    for entry in models:
        assert entry["latency_device"] == "cpu"
        assert set(entry["latency_ms"]) == {"batch_1", "batch_128"} and min(entry["latency_ms"].values()) > 0
        assert "clean/accuracy" in entry["metrics"]
        assert {"corruption/gaussian_noise/3/accuracy", "corruption/brightness/3/accuracy"} <= set(entry["metrics"])
        assert any(key.startswith("noise/") for key in entry["metrics"])
        assert any(key.startswith("adversarial/") and "fgsm" in key for key in entry["metrics"])

    records = [json.loads(line) for line in (run.path / "records.jsonl").read_text().splitlines()]
    notes = {r["condition"]: r.get("note", "") for r in records if r["condition"].startswith("corruption/")}
    assert notes and all("imagenet parameters" in note for note in notes.values()), notes
