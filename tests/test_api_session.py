"""The API's session: ``audit(report=, gate=)`` runs the CLI's tail (one implementation), and the process
settings a run changes (torch's threads, TF32) are the caller's again when it returns or raises."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from robusteval.api import audit, prune
from robusteval.cli import main
from robusteval.config import AuditConfig, load_config
from robusteval.device import exact_fp32
from robusteval.errors import GateFailed, RobustEvalError
from robusteval.gate import parse_rules
from robusteval.models.archs import build_arch
from robusteval.pruning import PruneSettings
from robusteval.session import torch_settings

STRICT = "rules:\n  clean/accuracy: {min: 1.01}\n"  # no accuracy reaches it: the gate fails


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lenet") / "model.pt"
    torch.manual_seed(0)
    torch.save(build_arch("lenet_300_100", 10).state_dict(), path)
    return path


def _config(**sections: object) -> AuditConfig:
    """What ``robusteval evaluate MODEL --arch lenet_300_100 --subset 40`` runs."""
    config = load_config("clean")
    return config.replace(model=dataclasses.replace(config.model, arch="lenet_300_100"),
                          data=dataclasses.replace(config.data, subset=40), **sections)


def test_audit_reports_and_gates_as_the_cli_does(lenet: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rules = parse_rules({"rules": {"clean/accuracy": {"min": 0.0}}})
    run = audit(lenet, config=_config(), out=tmp_path / "api", progress=False, report=True, gate=rules,
                junit=tmp_path / "api.xml")
    out = capsys.readouterr().out
    assert (run.path / "report.html").is_file() and (tmp_path / "api.xml").is_file()
    assert run.gate is not None and run.gate.passed and len(run.gate.checks) == 1
    assert out.index("results: ") < out.index("report: ") < out.index("robusteval gate passed")

    (tmp_path / "strict.yaml").write_text(STRICT)  # a failed gate: on Run, raised only when asked
    failed = audit(lenet, config=_config(), out=tmp_path / "api", progress=False, gate=tmp_path / "strict.yaml",
                   junit=tmp_path / "api.xml")
    assert failed.gate is not None and not failed.gate.passed and failed.summary == run.summary
    with pytest.raises(GateFailed) as raised:
        failed.gate.raise_on_failure()
    capsys.readouterr()

    code = main(["evaluate", str(lenet), "--arch", "lenet_300_100", "--subset", "40", "--out", str(tmp_path / "cli"),
                 "--quiet", "--gate", str(tmp_path / "strict.yaml"), "--junit", str(tmp_path / "cli.xml")])
    assert code == raised.value.exit_code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"robusteval: gate failed: {raised.value}"
    assert (tmp_path / "cli.xml").read_text() == (tmp_path / "api.xml").read_text()
    assert (tmp_path / "cli" / "report.html").is_file()


def test_a_bad_gate_file_fails_before_any_work(lenet: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("rules:\n  clean/accuracy: {max_dorp: 0.01}\n")
    with pytest.raises(RobustEvalError, match="did you mean 'max_drop'"):
        audit(lenet, config=_config(), out=tmp_path / "o", progress=False, gate=gate)
    assert not (tmp_path / "o").exists()
    assert audit(lenet, config=_config(), out=tmp_path / "o", progress=False).gate is None


def test_threads_are_restored_after_audit_and_after_a_failing_audit(lenet: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    config = _config(threads=before + 1)
    run = audit(lenet, config=config, out=tmp_path / "ok", progress=False)
    assert json.loads((run.path / "manifest.json").read_text())["machine"]["threads"] == before + 1  # it ran so
    assert torch.get_num_threads() == before
    with pytest.raises(RobustEvalError, match="does not exist"):
        audit(tmp_path / "missing.pt", config=config, out=tmp_path / "bad", progress=False)
    assert torch.get_num_threads() == before
    pruning = PruneSettings(methods=("magnitude",), ratios=(0.5,), measure_latency=False)
    with pytest.raises(RobustEvalError, match="does not exist"):
        prune(tmp_path / "missing.pt", config=config.replace(pruning=pruning), out=tmp_path / "p", progress=False)
    assert torch.get_num_threads() == before


def test_torch_settings_give_back_threads_and_tf32() -> None:
    before = torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the caller's choice
    try:
        with pytest.raises(KeyboardInterrupt), torch_settings(before + 1):
            exact_fp32()  # what resolve_device does on CUDA
            assert torch.get_num_threads() == before + 1
            raise KeyboardInterrupt
        assert torch.get_num_threads() == before
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        exact_fp32()



def test_audit_without_a_report_or_gate_prints_nothing(lenet: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A notebook's plain ``audit()`` writes the run and says nothing on stdout, as before it could report;
    the CLI without a tail (``--no-report``, no gate) still says where the results are."""
    audit(lenet, config=_config(), out=tmp_path / "api", progress=False)
    assert capsys.readouterr().out == ""
    assert main(["evaluate", str(lenet), "--arch", "lenet_300_100", "--subset", "40", "--out", str(tmp_path / "cli"),
                 "--quiet", "--no-report"]) == 0
    assert capsys.readouterr().out == f"results: {tmp_path / 'cli' / 'summary.json'}\n"
