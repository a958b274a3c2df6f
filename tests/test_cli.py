"""The command line: every path ends in exit code 0, 1 (gate failed) or 2 with a one-line error."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
from safetensors.torch import save_file

from fixtures.runs import write_synthetic_run
from robusteval.cli import PIPE_CLOSED, main
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


def test_opaque_model_against_an_opaque_reference(resnet_files, tmp_path, capsys):
    """TorchScript against TorchScript: no layers to hook on either side; sizes come from a traced forward."""
    out = tmp_path / "run"
    _run(["audit", str(resnet_files / "scripted.pt"), "--reference", str(resnet_files / "scripted.pt"),
          "--config", "clean", "--subset", "50", "--out", str(out), "--quiet", "--no-report"], capsys)
    dense, given = json.loads((out / "summary.json").read_text())["models"]
    assert given["macs"] == dense["macs"] > 0 and given["params"] == dense["params"] > 0
    assert given["macs_reduction"] == given["params_reduction"] == 0.0 and given["speedup"]["batch_1"] > 0


def test_top_level_api_is_importable_lazily():
    import robusteval
    from robusteval import AuditConfig, audit, demo, load_config, prune

    assert callable(audit) and callable(prune) and callable(demo)
    assert isinstance(load_config("clean"), AuditConfig)
    with pytest.raises(AttributeError):
        robusteval.nonexistent  # noqa: B018


# --- bad input is exit 2 with one line naming it; CI outputs cannot be injected -----------------------------------

@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenet")
    torch.manual_seed(0)
    torch.save(build_arch("lenet_300_100", 10).state_dict(), d / "model.pt")
    return d / "model.pt"


def _evaluate(model, out, *extra):
    return main(["evaluate", str(model), "--arch", "lenet_300_100", "--subset", "40", "--out", str(out), "--quiet",
                 "--no-report", *extra])


@pytest.mark.parametrize(("text", "names"), [
    ("data: {seed: -1}\n", ["data", "seed", "-1"]),
    ("threads: -2\n", ["threads", "-2"]),
    ("analysis: {tolerance: -1}\n", ["analysis", "tolerance", "-1"]),
    ("analysis: {tolerance: .nan}\n", ["analysis", "tolerance", "nan"]),
    ("analysis: {tolerances: {clean/: .inf}}\n", ["analysis", "clean/", "inf"]),
    ("evaluate: {shift: {mine: 'foo:bar'}}\n", ["shift set 'mine'", "unknown data source kind 'foo'"]),
])
def test_bad_config_values_are_rejected_before_any_work(lenet, tmp_path, capsys, text, names):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "o"
    assert _evaluate(lenet, out, "--config", str(config)) == 2
    line = _error_line(capsys)
    assert str(config) in line and all(n in line for n in names), line
    assert not out.exists()  # nothing started


def test_a_bad_gate_file_fails_before_the_audit(lenet, tmp_path, capsys):
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  clean/accuracy: {max_dorp: 0.01}\n")
    out = tmp_path / "o"
    assert _evaluate(lenet, out, "--gate", str(gate)) == 2
    line = _error_line(capsys)
    assert str(gate) in line and "did you mean 'max_drop'" in line
    assert not out.exists()


def test_a_binary_config_is_bad_input(lenet, tmp_path, capsys):
    config = tmp_path / "bin.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    assert _evaluate(lenet, tmp_path / "o", "--config", str(config)) == 2
    assert f"config file {config} is not UTF-8 text" in _error_line(capsys)


def test_yaml_1_2_exponent_floats_are_numbers(lenet, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {source: bundled}\nanalysis: {tolerance: 1.0e-2, tolerances: {clean/: 5e-3}}\n")
    _run(["evaluate", str(lenet), "--arch", "lenet_300_100", "--subset", "40", "--config", str(config),
          "--out", str(tmp_path / "o"), "--quiet", "--no-report"], capsys)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["config"]["analysis"] == {"tolerance": 0.01, "tolerances": {"clean/": 0.005}, "baseline": "auto"}


@pytest.mark.parametrize(("flags", "names"), [
    (["--ratios", "0.5,1.5"], ["--ratios 0.5,1.5", "1.5"]),
    (["--methods", "magnitud"], ["--methods magnitud", "did you mean 'magnitude'"]),
    (["--threads", "-2"], ["--threads -2", "threads must be positive"]),
    (["--seed", "-1"], ["--seed -1", "seed"]),
    (["--data", "foo:bar"], ["--data foo:bar", "unknown data source kind 'foo'"]),
])
def test_flag_errors_name_the_flag_not_the_config(lenet, tmp_path, capsys, flags, names):
    code = main(["audit", str(lenet), "--arch", "lenet_300_100", "--config", "clean", "--out", str(tmp_path / "o"),
                 "--quiet", *flags])
    assert code == 2
    line = _error_line(capsys)
    assert all(n in line for n in names) and "clean.yaml" not in line, line


def test_a_directory_or_symlink_loop_as_model_says_so(tmp_path, capsys):
    loop = tmp_path / "loop.pt"
    loop.symlink_to(tmp_path / "other.pt")
    (tmp_path / "other.pt").symlink_to(loop)
    for path, state in ((tmp_path, "is a directory"), (loop, "is a symlink loop")):
        assert _evaluate(path, tmp_path / "o") == 2
        line = _error_line(capsys)
        assert f"model file {path} {state}" in line, line


def test_a_single_model_with_corruptions_is_reported_and_gated(lenet, tmp_path, capsys):
    config, gate = tmp_path / "c.yaml", tmp_path / "gate.yaml"
    config.write_text("evaluate: {calibration: {}, agreement: false,\n"
                      "           corruption: {corruptions: [fog], severities: [1, 3], subset: 20}}\n")
    gate.write_text("rules:\n  corruption/mean_accuracy: {min: 0.0}\n")
    assert main(["evaluate", str(lenet), "--arch", "lenet_300_100", "--subset", "40", "--config", str(config),
                 "--out", str(tmp_path / "o"), "--quiet", "--gate", str(gate)]) == 0, capsys.readouterr().err
    assert "Accuracy per corruption and severity" in (tmp_path / "o" / "report.html").read_text()
    assert "robusteval gate passed" in capsys.readouterr().out


def test_names_with_newlines_cannot_inject_workflow_commands(lenet, tmp_path, capsys, monkeypatch):
    """A candidate file named to forge '::error' lines: stdout keeps every name on its own line."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    evil = tmp_path / "evil\n::error title=pwned::owned\x1b[2J.pt"
    evil.write_bytes(lenet.read_bytes())
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  clean/accuracy: {max_drop: -1.0}\n")  # always fails: annotations are printed
    out = tmp_path / "o"
    code = main(["audit", str(evil), "--reference", str(lenet), "--arch", "lenet_300_100", "--config", "clean",
                 "--subset", "40", "--out", str(out), "--quiet", "--gate", str(gate), "--junit",
                 str(tmp_path / "junit.xml")])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    commands = [line for line in captured.out.splitlines() if line.startswith("::")]
    assert len(commands) == 1 and commands[0].startswith("::error title=robusteval gate%3A clean/accuracy")
    assert "%0A::error title=pwned::owned" in commands[0]
    assert "\x1b" not in captured.out + captured.err
    ET.parse(tmp_path / "junit.xml")
    ids = [m["id"] for m in json.loads((out / "summary.json").read_text())["models"]]
    assert ids == ["dense", "evil\n::error title=pwned::owned\x1b[2J"]  # the name itself is kept as given


def test_error_messages_are_one_printable_line(tmp_path, capsys):
    path = tmp_path / "no\nsuch\x1b[31m.pt"
    assert _evaluate(path, tmp_path / "o") == 2
    line = _error_line(capsys)
    assert "\\x0asuch\\x1b[31m.pt does not exist" in line


def test_output_into_a_reader_that_stopped_ends_quietly():
    """``robusteval presets | head -0``: the reader closes before the output comes; no traceback, no
    "internal error", the exit code a shell reports for a tool killed by SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "robusteval", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    assert proc.wait(timeout=60) == PIPE_CLOSED
    assert proc.stderr.read() == ""
