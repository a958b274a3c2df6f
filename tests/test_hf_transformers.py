"""Hugging Face transformers image classifiers: ``hf-hub:<org>/<repo>`` with a transformers config.json is built
by transformers from the cache, offline, and its ``ModelOutput`` is read as ``.logits`` everywhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures.loading import logits
from robusteval.cli import main
from robusteval.models.loading import load_model
from robusteval.models.wrap import LogitsOf, check_model, with_logits
from test_model_sources import _hf_repo, hf_cache  # noqa: F401  (the cache layout and its fixture)

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'robusteval[hf]'")
pytest.importorskip("huggingface_hub")

X = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def tiny_vit(hf_cache: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A randomly initialised 2-layer ViT for 32x32 images and 10 classes, saved with save_pretrained into the
    Hugging Face cache layout as acme/tiny-vit."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=10)
    transformers.ViTForImageClassification(config).eval().save_pretrained(tmp_path / "saved")
    files = {name: (tmp_path / "saved" / name).read_bytes() for name in ("config.json", "model.safetensors")}
    assert "ViTForImageClassification" in json.loads(files["config.json"])["architectures"]
    return _hf_repo(hf_cache, "acme/tiny-vit", files)


def _own_loading(snapshot: Path) -> torch.nn.Module:
    """transformers' own loading of the snapshot (offline, no hub kernels)."""
    auto = transformers.AutoModelForImageClassification
    return auto.from_pretrained(str(snapshot), local_files_only=True, use_kernels=False).eval()


def test_a_transformers_classifier_loads_with_the_librarys_logits(tiny_vit: Path) -> None:
    loaded = load_model("hf-hub:acme/tiny-vit")
    assert isinstance(loaded, LogitsOf) and not loaded.training
    own = _own_loading(tiny_vit)
    with torch.inference_mode():
        expected = own(X).logits
    torch.testing.assert_close(logits(loaded, X), expected, rtol=0, atol=0)
    check_model(loaded, (3, 32, 32), 10)


def test_any_model_returning_logits_is_wrapped_once(tiny_vit: Path) -> None:
    own = _own_loading(tiny_vit)
    wrapped = with_logits(own, (3, 32, 32))
    assert isinstance(wrapped, LogitsOf) and with_logits(wrapped, (3, 32, 32)) is wrapped
    check_model(wrapped, (3, 32, 32), 10)


def test_audit_prunes_and_attacks_a_transformers_model(tiny_vit: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: {source: bundled, subset: 16, batch_size: 8}\n"
                      "pruning: {methods: [magnitude], ratios: [0.5], finetune: {epochs: 0}, measure_latency: false}\n"
                      "evaluate:\n  clean: true\n  adversarial: {sample_size: 4, attacks: [fgsm], autoattack: 'off',"
                      " min_norm: [], large_eps: null, linf_eps: [0.0078431]}\n")
    code = main(["audit", "hf-hub:acme/tiny-vit", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet",
                 "--no-report"])
    assert code == 0, capsys.readouterr().err
    models = json.loads((tmp_path / "run" / "summary.json").read_text())["models"]
    assert [m["id"] for m in models] == ["dense", "magnitude@0.5"]
    assert models[1]["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert "adversarial/fgsm/0.00784/accuracy" in models[1]["metrics"]
    assert (tmp_path / "run" / "models" / "magnitude@0.5.pt2").is_file()
