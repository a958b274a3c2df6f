"""The command line: every path ends in exit code 0, 1 (gate failed) or 2 with a one-line error."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from safetensors.torch import save_file

from fixtures.runs import write_synthetic_run
from robusteval.cli import main
from robusteval.models.archs import build_arch


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    """One random CIFAR ResNet-20 saved in every supported format."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = build_arch("cifar_resnet20", 10).eval()
    torch.save(model.state_dict(), d / "state.pt")
    save_file(model.state_dict(), str(d / "weights.safetensors"))
    torch.jit.save(torch.jit.trace(model, torch.rand(2, 3, 32, 32)), str(d / "scripted.pt"))
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, 32, 32),)), str(d / "exported.pt2"))
    return d


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _run(args, capsys, code=0):
    result = main(args)
    if result != code:
        pytest.fail(f"exit {result}, expected {code}: {capsys.readouterr().err}")
    return result


def test_every_format_gives_the_same_clean_accuracy(resnet_files, tmp_path, capsys):
    results = {}
    for name, arch in [("state.pt", ["--arch", "cifar_resnet20"]), ("weights.safetensors", ["--arch", "cifar_resnet20"]),
                       ("scripted.pt", []), ("exported.pt2", [])]:
        out = tmp_path / name
        _run(["evaluate", str(resnet_files / name), *arch, "--subset", "200", "--out", str(out), "--quiet",
              "--no-report"], capsys)
        summary = json.loads((out / "summary.json").read_text())
        results[name] = summary["models"][0]["metrics"]
    first = results["state.pt"]
    for name, metrics in results.items():
        assert metrics["clean/accuracy"] == first["clean/accuracy"], name
        assert metrics["calibration/nll"] == pytest.approx(first["calibration/nll"], abs=1e-5), name


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"\x00garbage" * 100), "not a readable model file"),
    (lambda p: None, "does not exist"),
])
def test_bad_model_files_give_one_line_errors(setup, message, tmp_path, capsys):
    path = tmp_path / "model.pt"
    setup(path)
    assert main(["evaluate", str(path), "--arch", "cifar_resnet20", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = _error_line(capsys)
    assert line.startswith("robusteval: error:") and message in line


def test_truncated_file(resnet_files, tmp_path, capsys):
    data = (resnet_files / "state.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    assert main(["evaluate", str(path), "--arch", "cifar_resnet20", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "robusteval: error:" in _error_line(capsys)


def test_unknown_arch_suggests(resnet_files, tmp_path, capsys):
    assert main(["evaluate", str(resnet_files / "state.pt"), "--arch", "cifar_resnet2O", "--quiet",
                 "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'cifar_resnet20'" in _error_line(capsys)


def test_class_count_mismatch(tmp_path, capsys):
    model = build_arch("cifar_resnet20", 7).eval()
    path = tmp_path / "seven.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, 32, 32),)), str(path))
    assert main(["evaluate", str(path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "outputs 7 logits per input but the data has 10 classes" in _error_line(capsys)


def test_wrong_input_size(tmp_path, capsys):
    arch = tmp_path / "arch.py"
    arch.write_text("from robusteval.models.cifar import LeNet300100\n"
                    "def big(num_classes=10):\n    return LeNet300100(num_classes, in_features=3 * 64 * 64)\n")
    path = tmp_path / "lenet.pt"
    torch.save(build_arch(f"{arch}:big", 10).state_dict(), path)
    assert main(["evaluate", str(path), "--arch", f"{arch}:big", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "cannot run on inputs of shape (N, 3, 32, 32)" in _error_line(capsys)


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "cifar1O"], "did you mean 'cifar10'"),
    (["--subset", "-3"], "subset must be positive"),
    (["--mean", "0.5,x", "--std", "1,1,1"], "--mean"),
    (["--mean", "0.5,0.5,0.5"], "give both --mean and --std"),
    (["--config", "nonexistent.yaml"], "does not exist"),
])
def test_bad_options(extra, message, resnet_files, tmp_path, capsys):
    args = ["evaluate", str(resnet_files / "state.pt"), "--arch", "cifar_resnet20", "--quiet",
            "--out", str(tmp_path / "o"), *extra]
    assert main(args) == 2
    assert message in _error_line(capsys)


def test_bad_config_key(resnet_files, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {sourse: bundled}\n")
    assert main(["evaluate", str(resnet_files / "state.pt"), "--arch", "cifar_resnet20", "--config", str(cfg),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "did you mean 'source'" in _error_line(capsys)


def test_pickled_module_refused_without_trust(tmp_path, capsys):
    path = tmp_path / "full.pt"
    torch.save(build_arch("cifar_resnet20", 10), path)
    assert main(["evaluate", str(path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "--trust-pickle" in _error_line(capsys)
    _run(["evaluate", str(path), "--trust-pickle", "--subset", "20", "--quiet", "--no-report",
          "--out", str(tmp_path / "ok")], capsys)


def test_gate_exit_codes_and_junit(tmp_path, capsys):
    run = write_synthetic_run(tmp_path / "run")
    loose = tmp_path / "loose.yaml"
    loose.write_text("rules:\n  clean/accuracy: {max_drop: 0.9}\n")
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules:\n  clean/accuracy: {max_drop: 0.0}\n")
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(run), "--gate", str(loose), "--junit", str(junit)]) == 0
    assert ET.parse(junit).getroot().get("failures") == "0"
    capsys.readouterr()
    assert main(["gate", str(run), "--gate", str(strict), "--junit", str(junit)]) == 1
    assert int(ET.parse(junit).getroot().get("failures")) > 0
    assert "gate failed" in capsys.readouterr().err
    assert main(["gate", str(tmp_path / "missing"), "--gate", str(loose)]) == 2
    assert main(["gate", str(run), "--gate", str(tmp_path / "nope.yaml")]) == 2


def test_report_rebuilds_from_records_alone(tmp_path, capsys):
    run = write_synthetic_run(tmp_path / "run")
    _run(["report", str(run)], capsys)
    assert (run / "report.html").is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("command", ["audit", "evaluate", "prune", "report", "gate", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: robusteval" in capsys.readouterr().out


def test_audit_a_pruned_model_against_its_reference_with_a_gate(resnet_files, tmp_path, capsys):
    from robusteval.pruning import FinetuneSettings, PruneSettings, prune_model, save_member

    dense = build_arch("cifar_resnet20", 10).eval()
    dense.load_state_dict(torch.load(resnet_files / "state.pt", weights_only=True))
    settings = PruneSettings(measure_latency=False, finetune=FinetuneSettings(epochs=0))
    member = prune_model(dense, "magnitude", 0.5, settings=settings, example_input=torch.rand(2, 3, 32, 32),
                         train_data=None)
    pruned = save_member(member, tmp_path / "family", example_input=torch.rand(2, 3, 32, 32))
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  clean/accuracy: {max_drop: 1.0}\n  calibration/ece: {max_increase: 1.0}\n")
    out, junit = tmp_path / "run", tmp_path / "junit.xml"
    _run(["audit", str(pruned), "--reference", str(resnet_files / "state.pt"), "--arch", "cifar_resnet20",
          "--config", "clean", "--subset", "100", "--gate", str(gate), "--junit", str(junit), "--out", str(out),
          "--quiet", "--no-report"], capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert [m["id"] for m in summary["models"]] == ["dense", "magnitude@0.5"]
    assert summary["models"][1]["method"] == "given"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["model_sha256"]) == {"dense", "magnitude@0.5"}
    assert ET.parse(junit).getroot().get("tests") == "2"


def test_top_level_api_is_importable_lazily():
    import robusteval
    from robusteval import AuditConfig, audit, demo, load_config, prune

    assert callable(audit) and callable(prune) and callable(demo)
    assert isinstance(load_config("clean"), AuditConfig)
    with pytest.raises(AttributeError):
        robusteval.nonexistent  # noqa: B018
