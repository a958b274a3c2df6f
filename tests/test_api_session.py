"""The API's session: the process settings a run changes (torch's threads, TF32) are the caller's again
when it returns or raises."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from robusteval.api import audit, prune
from robusteval.config import AuditConfig, load_config
from robusteval.device import exact_fp32
from robusteval.errors import RobustEvalError
from robusteval.models.archs import build_arch
from robusteval.pruning import PruneSettings
from robusteval.session import torch_settings


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
