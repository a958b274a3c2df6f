"""Fuzzing the command line: random bytes and random mutations of valid model, npz, config and gate
files. Every input must end in exit 0, 1 or 2, never 3 (an internal error) or an uncaught exception.

Seeded, so a failure is reproducible: the assertion message names the input kind and its index.
"""
from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robusteval.cli import main

#: inputs per kind in the default suite (half random bytes, half mutations of a valid file)
PER_KIND = {"model": 150, "npz": 150, "config": 200, "gate": 200}

CONFIG = b"""data: {source: bundled, subset: 20, batch_size: 10}
evaluate: {clean: true, agreement: false, calibration: {bins: 5}}
analysis: {tolerance: 0.01, tolerances: {clean/: 0.02}}
"""
GATE = b"""rules:
  clean/accuracy: {max_drop: 0.005, min: 0.0}
  calibration/ece: {max_increase: 0.02, max: 1.0}
"""


def _tiny_model() -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(48, 10)).eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, torch.rand(2, 3, 32, 32)), buf)
    return buf.getvalue()


def _tiny_npz() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y=np.arange(20) % 10,
             classes=np.array([f"c{i}" for i in range(10)]))
    return buf.getvalue()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip bits, overwrite, insert, delete or duplicate a span, truncate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out += rng.randbytes(8)
        i = rng.randrange(len(out))
        n = rng.choice((1, 1, 2, 8, 64))
        op = rng.choice(("flip", "overwrite", "insert", "delete", "duplicate", "truncate"))
        if op == "flip":
            out[i] ^= 1 << rng.randrange(8)
        elif op == "overwrite":
            out[i:i + n] = rng.randbytes(n)
        elif op == "insert":
            out[i:i] = rng.choice((rng.randbytes(n), b"\n", b":", b"- ", b"{", b"\x00", b"1e9", b"-1", b".nan"))
        elif op == "delete":
            del out[i:i + n]
        elif op == "duplicate":
            out[i:i] = out[i:i + n]
        else:
            del out[i:]
    return bytes(out)


def _inputs(valid: bytes, count: int, rng: random.Random) -> list[bytes]:
    random_bytes = [rng.randbytes(rng.choice((0, 1, 16, 300, 4000))) for _ in range(count // 2)]
    return random_bytes + [_mutate(valid, rng) for _ in range(count - count // 2)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-model run to gate: the tiny TorchScript model audited against a LeNet reference."""
    from robusteval.models.archs import build_arch

    d = tmp_path_factory.mktemp("fuzz")
    (d / "model.pt").write_bytes(_tiny_model())
    (d / "config.yaml").write_bytes(CONFIG)
    torch.save(build_arch("lenet_300_100", 10).state_dict(), d / "lenet.pt")
    assert main(["audit", str(d / "model.pt"), "--reference", str(d / "lenet.pt"), "--arch", "lenet_300_100",
                 "--config", str(d / "config.yaml"), "--out", str(d / "run"), "--quiet", "--no-report"]) == 0
    return d


def _cases(d: Path) -> dict[str, tuple[bytes, str, Callable[[Path, Path], list[str]]]]:
    model, config = str(d / "model.pt"), str(d / "config.yaml")
    return {
        "model": (_tiny_model(), ".pt", lambda f, out: ["evaluate", str(f), "--config", config, "--out", str(out)]),
        "npz": (_tiny_npz(), ".npz", lambda f, out: ["evaluate", model, "--config", config, "--data", f"npz:{f}",
                                                     "--out", str(out)]),
        "config": (CONFIG, ".yaml", lambda f, out: ["evaluate", model, "--config", str(f), "--out", str(out)]),
        "gate": (GATE, ".yaml", lambda f, out: ["gate", str(d / "run"), "--gate", str(f)]),
    }


@pytest.mark.parametrize("kind", list(PER_KIND))
def test_fuzzed_inputs_end_in_exit_0_1_or_2(kind, finished_run, tmp_path, capsys):
    valid, suffix, argv = _cases(finished_run)[kind]
    rng = random.Random(f"robusteval-fuzz-{kind}")
    codes: dict[int, int] = {}
    for i, data in enumerate(_inputs(valid, PER_KIND[kind], rng)):
        path = tmp_path / f"input{i}{suffix}"
        path.write_bytes(data)
        code = main([*argv(path, tmp_path / f"out{i}"), "--quiet", *(["--no-report"] if kind != "gate" else [])])
        err = capsys.readouterr().err
        assert code in (0, 1, 2), f"{kind} input {i} ({len(data)} bytes) exited {code}: {err.strip()[-300:]}"
        if code == 2:
            lines = [line for line in err.splitlines() if line.startswith("robusteval:")]
            assert len(lines) == 1 and lines[0].startswith("robusteval: error:"), (kind, i, err)
        codes[code] = codes.get(code, 0) + 1
    print(f"fuzz {kind}: {PER_KIND[kind]} inputs, exit codes {dict(sorted(codes.items()))}")
    assert sum(codes.values()) == PER_KIND[kind]
