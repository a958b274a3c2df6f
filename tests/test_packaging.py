"""A regular install works as a checkout does (issue 26): the presets of ``configs/`` ship in the wheel
and the sdist and resolve by name, ``python -m robusteval`` and ``--version`` work, the manifest records
the version. The whole install from a wheel in a fresh environment is ``scripts/check_install.sh`` (CI)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import robusteval
from robusteval.cli import main
from robusteval.config import load_config
from robusteval.errors import RobustEvalError
from robusteval.gate import load_rules
from robusteval.models.archs import build_arch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {p.name: p.read_bytes() for p in (ROOT / "configs").glob("*.yaml")}


def _hook(hook: str, source: Path, out: Path) -> Path:
    """Run a PEP 517 hook of setuptools (as pip and ``python -m build`` do, offline) in ``source``."""
    code = f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """The sdist of a copy of the checkout, and the wheel built from the unpacked sdist."""
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("robusteval", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    sdist = _hook("build_sdist", source, tmp / "out")
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", **safe)
    (unpacked,) = (tmp / "unpacked").iterdir()
    return sdist, _hook("build_wheel", unpacked, tmp / "out")


def test_the_wheel_built_from_the_sdist_ships_every_preset(dists):
    sdist, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        packaged = {n.rsplit("/", 1)[1]: whl.read(n) for n in names if n.startswith("robusteval/configs/")}
        entry_points = whl.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert packaged == CONFIGS  # every configs/*.yaml, byte for byte, and nothing else
    assert {"robusteval/__main__.py", "robusteval/report/template.html",
            "robusteval/assets/cifar_resnet20.safetensors"} <= set(names)
    assert "robusteval = robusteval.cli:main" in entry_points
    assert f"\nVersion: {robusteval.__version__}\n" in metadata
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames() if len(Path(n).parts) > 1}
    assert {f"configs/{name}" for name in CONFIGS} | {"setup.py", "pyproject.toml"} <= in_sdist


def test_python_m_robusteval_and_version():
    for args in (["-m", "robusteval", "--version"], ["-c", "from robusteval.cli import main; main()", "--version"]):
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stdout.strip()) == (0, f"robusteval {robusteval.__version__}"), done.stderr
    done = subprocess.run([sys.executable, "-m", "robusteval", "gate"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "usage: robusteval gate" in done.stderr  # argparse, under its own name


def test_presets_lists_every_config_with_its_description(capsys):
    from robusteval import presets

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(presets.preset_dir()) in lines[0]
    rows = {line.split()[0]: line.split(None, 1)[1] if len(line.split()) > 1 else "" for line in lines[1:]}
    assert set(rows) == {Path(name).stem for name in CONFIGS}
    assert rows["clean"] == "Evaluate only the given model on clean data: the quickest sanity check (no pruning)."
    assert rows["smoke"].startswith("The smallest audit")


@pytest.mark.parametrize(("text", "description"), [
    ("# One line.\n# More. And more.\ndata: {}\n", "One line."),
    ("#   Two lines that\n# make one sentence. Then another.\n", "Two lines that make one sentence."),
    ("# No full stop\n", "No full stop"),
    ("data: {}\n# a comment after the first line\n", ""),
])
def test_a_description_is_the_first_sentence_of_the_header(tmp_path, text, description):
    from robusteval import presets

    (tmp_path / "p.yaml").write_text(text)
    assert presets.describe(tmp_path / "p.yaml") == description


def test_an_installed_package_reads_its_packaged_copy(tmp_path, monkeypatch):
    """After an install the presets are robusteval/configs/ (copied by setup.py), not the checkout's."""
    from robusteval import presets

    packaged = tmp_path / "configs"
    packaged.mkdir()
    (packaged / "mine.yaml").write_text("# Mine.\ndata: {subset: 7}\n")
    monkeypatch.setattr(presets, "PACKAGED_DIR", packaged)
    assert presets.preset_dir() == packaged and presets.preset_names() == ["mine"]
    assert load_config("mine").data.subset == 7
    with pytest.raises(RobustEvalError, match=r"config file quick does not exist .*preset name: mine\)$"):
        load_config("quick")


def test_a_path_wins_over_a_preset_and_only_bare_names_are_presets(tmp_path, monkeypatch):
    (tmp_path / "quick").write_text("data: {subset: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("quick").data.subset == 3  # an existing file named like a preset is that file
    for name in ("clean.yml", "sub/clean"):
        with pytest.raises(RobustEvalError, match=f"config file {name} does not exist"):
            load_config(name)


def test_an_unknown_preset_is_one_line_listing_the_presets(tmp_path, capsys):
    assert main(["audit", "model.pt", "--config", "quik", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    names = ", ".join(sorted(Path(name).stem for name in CONFIGS))
    assert err == f"robusteval: error: config file quik does not exist (give a path, or a preset name: {names})"


def test_gate_rules_by_preset_name():
    assert load_rules("gate") == load_rules(ROOT / "configs" / "gate.yaml")
    with pytest.raises(RobustEvalError, match="gate file gates does not exist"):
        load_rules("gates")


def test_the_example_workflow_installs_a_pinned_version_and_uses_packaged_presets():
    from robusteval.presets import resolve

    workflow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    runs = [str(step.get("run", "")) for step in workflow["jobs"]["audit"]["steps"]]
    assert "@v" in workflow["env"]["ROBUSTEVAL"] and any('pip install "$ROBUSTEVAL"' in run for run in runs)
    audit = next(run for run in runs if run.startswith("robusteval audit")).split()
    for flag, what in (("--config", "config file"), ("--gate", "gate file")):
        name = audit[audit.index(flag) + 1]
        assert "/" not in name and resolve(name, what).parent == (ROOT / "configs")


def test_the_manifest_records_the_version_that_ran(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(build_arch("lenet_300_100", 10).state_dict(), tmp_path / "model.pt")
    assert main(["evaluate", str(tmp_path / "model.pt"), "--arch", "lenet_300_100", "--subset", "40",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-report"]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["versions"]["robusteval"] == robusteval.__version__
