"""Shared test settings: one thread (CI machines are small and shared), offline data paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robusteval.device import exact_fp32

torch.set_num_threads(1)

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test session gets its own decoded-array cache unless one is set explicitly."""
    if "ROBUSTEVAL_CACHE" not in os.environ:
        monkeypatch.setenv("ROBUSTEVAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("ROBUSTEVAL_OFFLINE", "1")  # nothing downloads in tests (frost photographs), subprocesses too


@pytest.fixture(autouse=True)
def _exact_fp32() -> None:
    """TF32 off in every test, whichever ran before (a test on CUDA must not depend on the order)."""
    exact_fp32()


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    """Path of the shared CIFAR-10 JPEG tarball; skips when this machine does not have it."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"shared CIFAR-10 copy not found at {SHARED_CIFAR}")
    return SHARED_CIFAR
