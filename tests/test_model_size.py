"""Size of opaque models (ONNX, TorchScript, torch.export): the eager model's parameters, nonzeros, sparsity and
MACs, counted from the graph or a traced forward."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fixtures.pruned import tp_thinned
from robusteval.analysis import analyse_run, verdict_lines
from robusteval.cli import main
from robusteval.errors import RobustEvalError
from robusteval.gate import evaluate_gate, markdown_summary, parse_rules
from robusteval.models.archs import build_arch
from robusteval.models.loading import load_model
from robusteval.models.size import is_opaque, opaque_size
from robusteval.pruning import model_info

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install 'robusteval[onnx]'")
pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript: pip install 'robusteval[onnx]'")

X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
FIGURES = ("params", "nonzero_params", "sparsity", "macs", "macs_effective")
DYNAMIC = ({0: torch.export.Dim("batch")},)


@pytest.fixture(scope="module")
def pruned() -> nn.Module:
    """Thinned by Torch-Pruning, then 60% of the remaining conv/linear weights masked to zero and folded."""
    model = tp_thinned(X)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.6)
    for module, name in layers:
        prune.remove(module, name)
    return _trained_like(model)


def _trained_like(model: nn.Module) -> nn.Module:
    """BatchNorm parameters and statistics away from their defaults, as after training (the exporter drops the
    all-zero biases that folding default statistics would give)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for tensor, low, high in ((m.running_var, 0.5, 2.0), (m.running_mean, -0.5, 0.5),
                                          (m.weight, 0.5, 1.5), (m.bias, -0.5, 0.5)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def _figures(info: dict) -> dict:
    return {k: info[k] for k in FIGURES}


def _eager(model: nn.Module) -> dict:
    return _figures(model_info(model, X, measure_latency=False))


def _onnx(model: nn.Module, path: Path, **kwargs) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), path, verbose=False, **kwargs)
    return load_model(path)


def _conv_bn_folded(model: nn.Module) -> nn.Module:
    """The eager model with every BatchNorm folded into its convolution (what torch.onnx.export's optimizer does)."""
    folded = copy.deepcopy(model)
    for parent in [folded, *folded.layer1, *folded.layer2, *folded.layer3]:
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            if hasattr(parent, bn):
                setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
                setattr(parent, bn, nn.Identity())
    return folded


def test_torchscript_and_torch_export_have_the_eager_figures(pruned: nn.Module, tmp_path: Path) -> None:
    expected = _eager(pruned)
    assert 0.5 < expected["sparsity"] < 0.7 and expected["macs_effective"] < expected["macs"]
    torch.jit.trace(pruned, X[:1]).save(str(tmp_path / "traced.pt"))
    torch.export.save(torch.export.export(pruned, (X,), dynamic_shapes=DYNAMIC), tmp_path / "program.pt2")
    for name in ("traced.pt", "program.pt2"):
        loaded = load_model(tmp_path / name)
        assert is_opaque(loaded) and not is_opaque(pruned)
        assert _figures(opaque_size(loaded, X)) == pytest.approx(expected), name


def test_onnx_figures_are_the_eager_ones_of_the_graph_it_holds(pruned: nn.Module, tmp_path: Path) -> None:
    """Unoptimised export keeps BatchNormalization (its running statistics are buffers, not parameters);
    the default export folds BatchNorm into the convolutions, as ``fuse_conv_bn_eval`` does."""
    kept = _onnx(pruned, tmp_path / "kept.onnx", dynamic_shapes=DYNAMIC, optimize=False)
    assert _figures(opaque_size(kept, X)) == pytest.approx(_eager(pruned))
    folded = _onnx(pruned, tmp_path / "folded.onnx", dynamic_shapes=DYNAMIC)
    expected = _eager(_conv_bn_folded(pruned))
    assert expected["params"] < _eager(pruned)["params"]
    assert _figures(opaque_size(folded, X)) == pytest.approx(expected)
    static = _onnx(pruned, tmp_path / "static.onnx")  # a fixed batch of 4, chunked by FixedBatch
    assert _figures(opaque_size(static, X)) == pytest.approx(expected)


class _Scale(nn.Module):
    """No Conv, Gemm or MatMul: logits are 10 pixels times a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([0.0, 1.0, 2.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * self.scale


def test_an_onnx_graph_without_conv_or_gemm_still_gets_params(tmp_path: Path) -> None:
    size = opaque_size(_onnx(_Scale().eval(), tmp_path / "scale.onnx", dynamic_shapes=DYNAMIC), X)
    assert (size["params"], size["nonzero_params"], size["macs"], size["sparsity"]) == (10, 8, 0, None)


def test_audit_reports_the_size_of_an_onnx_thinned_model_against_its_dense_parent(tmp_path: Path, capsys) -> None:
    dense = build_arch("cifar_resnet20", 10).eval()
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    thinned = _trained_like(tp_thinned(X))
    _onnx(thinned, tmp_path / "thinned.onnx", dynamic_shapes=DYNAMIC)
    code = main(["audit", str(tmp_path / "thinned.onnx"), "--reference", str(tmp_path / "dense.pt"), "--arch",
                 "cifar_resnet20", "--config", "clean", "--subset", "20", "--out", str(tmp_path / "run"), "--quiet",
                 "--no-report"])
    assert code == 0, capsys.readouterr().err
    parent, given = json.loads((tmp_path / "run" / "summary.json").read_text())["models"]
    folded = _eager(_conv_bn_folded(thinned))
    assert (given["params"], given["macs"]) == (folded["params"], folded["macs"])
    assert given["params_reduction"] == pytest.approx(1 - folded["params"] / parent["params"])
    assert given["macs_reduction"] == pytest.approx(1 - folded["macs"] / parent["macs"])
    assert given["macs_reduction"] > 0.2 and given["params_reduction"] > 0.2
    assert min(given["latency_ms"].values()) > 0
    assert parent["latency_ms"] == given["dense_latency_ms"]  # the reference is timed once, in the pairs

    # candidate-vs-reference wording: the verdict and the gate's Markdown say how much smaller it is
    fewer = (f"{parent['params'] / given['params']:.3g}x fewer parameters, "
             f"{parent['macs'] / given['macs']:.3g}x fewer MACs")
    (line,) = [v for v in verdict_lines(analyse_run(tmp_path / "run")) if v.startswith("thinned against dense: ")]
    assert line.startswith(f"thinned against dense: {fewer}, measured speed-up ") and "clean accuracy " in line
    assert "largest ratio tested" not in line
    rules = parse_rules({"rules": {"size/params_reduction": {"min": 0.2}, "size/macs": {"max": parent["macs"] / 2}}})
    result = evaluate_gate(json.loads((tmp_path / "run" / "summary.json").read_text()), rules)
    assert [c.passed for c in result.checks] == [True, False]
    assert f"Size of `thinned`: {fewer}, measured speed-up" in markdown_summary(result)
    with pytest.raises(RobustEvalError, match="size and speed-up are bounded with min or max, not max_drop"):
        parse_rules({"rules": {"speedup/batch_1": {"max_drop": 0.1}}})
