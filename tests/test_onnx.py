"""The deployed artifact: an ONNX export runs through onnxruntime with torch's logits, and is audited/gated.

Needs the optional extra (pip install 'robusteval[onnx]'); skipped with a reason without it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fixtures.loading import logits
from robusteval.cli import main
from robusteval.errors import RobustEvalError
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.models.loading import FixedBatch, load_model
from robusteval.models.onnx import OnnxModel
from robusteval.models.wrap import check_model, has_gradients, with_normalization

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install 'robusteval[onnx]'")
pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript: pip install 'robusteval[onnx]'")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled (trained) ResNet-20 as a state_dict, and its ONNX exports (dynamic batch and batch 4)."""
    d = tmp_path_factory.mktemp("onnx")
    model = load_model(BUNDLED_MODEL, arch=BUNDLED_ARCH)
    torch.save(model.state_dict(), d / "dense.pt")
    example = (torch.rand(4, 3, 32, 32),)
    torch.onnx.export(model, example, d / "deployed.onnx", dynamic_shapes=({0: torch.export.Dim("batch")},),
                      verbose=False)
    torch.onnx.export(model, example, d / "static.onnx", verbose=False)
    return d


def _torch_model(files: Path) -> nn.Module:
    return load_model(files / "dense.pt", arch="cifar_resnet20")



@pytest.mark.parametrize(("name", "batch"), [("deployed.onnx", 1), ("deployed.onnx", 7), ("static.onnx", 1),
                                             ("static.onnx", 9)])
def test_onnx_logits_match_torch(name: str, batch: int, files: Path) -> None:
    loaded = load_model(files / name, arch="ignored")
    assert isinstance(loaded, FixedBatch if name == "static.onnx" else OnnxModel)
    assert not has_gradients(loaded) and has_gradients(_torch_model(files))
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    torch.testing.assert_close(logits(loaded, x), logits(_torch_model(files), x), atol=1e-5, rtol=1e-5)
    check_model(with_normalization(loaded, (0.5,) * 3, (0.25,) * 3), (3, 32, 32), 10)


def test_onnx_refuses_gradients_instead_of_breaking_the_graph(files: Path) -> None:
    model = load_model(files / "deployed.onnx")
    with pytest.raises(RobustEvalError, match="no gradients; white-box attacks need the torch model"):
        model(torch.rand(2, 3, 32, 32, requires_grad=True))


def test_bad_onnx_files_are_one_line_errors(files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((files / "deployed.onnx").read_bytes()[:5000])
    with pytest.raises(RobustEvalError, match=f"{cut} is not a readable ONNX model") as exc:
        load_model(cut)
    assert "\n" not in str(exc.value)
    with pytest.raises(RobustEvalError, match=r"cannot run on inputs of shape \(N, 3, 64, 64\)") as exc:
        check_model(load_model(files / "deployed.onnx"), (3, 64, 64), 10, name="deployed.onnx")
    assert "\n" not in str(exc.value)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RobustEvalError, match=r"needs onnxruntime: pip install 'robusteval\[onnx\]'"):
        load_model(files / "deployed.onnx")


CONFIG = """
data: {source: bundled, subset: 40, batch_size: 16}
evaluate:
  agreement: true
  calibration: {bins: 5}
  corruption: {corruptions: [gaussian_noise, fog], severities: [3], subset: 20}
  noise: {eps: [0.0, 0.1], subset: 20}
  ood: {sets: [blobs], subset: 20}
  shift: {train_images: "bundled:train"}
  adversarial:
    sample_size: 12
    batch_size: 12
    linf_eps: [0.0078431]
    attacks: [fgsm]
    autoattack: "off"
    min_norm: []
    large_eps: null
    pgd_steps: 3
    transfer: [linf_pgd]
"""


def test_audit_of_the_deployed_onnx_gates_what_ships(files: Path, tmp_path: Path, capsys) -> None:
    """The ONNX export of the dense model is the same network: every forward-only metric equals dense's,
    white-box attacks are skipped with the reason, and the gate runs on the transfer attack."""
    config, gate, out = tmp_path / "c.yaml", tmp_path / "gate.yaml", tmp_path / "run"
    config.write_text(CONFIG)
    gate.write_text("rules:\n  clean/accuracy: {max_drop: 0.0}\n"
                    "  adversarial/transfer/linf_pgd/0.00784/accuracy: {max_drop: 0.0}\n")
    code = main(["audit", str(files / "deployed.onnx"), "--reference", str(files / "dense.pt"), "--arch",
                 "cifar_resnet20", "--config", str(config), "--gate", str(gate), "--out", str(out), "--quiet",
                 "--no-report"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    dense, deployed = (m["metrics"] for m in summary["models"])
    assert summary["models"][1]["id"] == "deployed"
    forward_only = {k: v for k, v in dense.items() if not k.startswith("adversarial/") or "/transfer/" in k}
    assert {"clean/accuracy", "corruption/fog/3/accuracy", "noise/0.1/accuracy", "ood/blobs/auroc_msp",
            "shift/train_images/accuracy", "calibration/ece", "adversarial/transfer/linf_pgd/0.00784/accuracy"} \
        <= set(forward_only)
    for key, value in forward_only.items():
        assert deployed[key] == pytest.approx(value, abs=1e-4), key
    assert deployed["agreement/top1"] == 1.0 and deployed["clean/accuracy"] > 0.6  # a trained model
    assert deployed["adversarial/transfer/linf_pgd/0.00784/accuracy"] < deployed["clean/accuracy"]
    assert "adversarial/fgsm/0.00784/accuracy" in dense and "adversarial/fgsm/0.00784/accuracy" not in deployed
    warnings = summary["models"][1]["warnings"]
    assert any(w.startswith("white-box attacks skipped: the model runs in onnxruntime") for w in warnings)
    assert min(summary["models"][1]["latency_ms"].values()) > 0
    assert summary["models"][1]["macs"] == summary["models"][0]["macs"] and summary["models"][1]["macs_reduction"] == 0

    gate.write_text("rules:\n  adversarial/fgsm/0.00784/accuracy: {max_drop: 0.5}\n")  # white-box: absent
    assert main(["gate", str(out), "--gate", str(gate)]) == 1
    assert "adversarial/fgsm/0.00784/accuracy is missing for model 'deployed'" in capsys.readouterr().out


def test_an_onnx_model_cannot_be_pruned(files: Path, tmp_path: Path, capsys) -> None:
    code = main(["audit", str(files / "deployed.onnx"), "--config", "quick", "--subset", "20", "--out",
                 str(tmp_path / "run"), "--quiet", "--no-report"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ONNX model cannot be pruned" in err and "--reference dense.pt" in err
