"""Architecture limits (issue 11), read from source by ``scripts/code_figures.py``: module and function
size, import cycles, layering, and metric-key patterns only in robusteval/metrics.py. Then the tool
itself, on tiny synthetic packages, so that none of the checks can pass by measuring nothing."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("code_figures", ROOT / "scripts" / "code_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cf = _load_tool()


@pytest.fixture(scope="module")
def fig():
    return cf.figures(ROOT / "robusteval")


def _listing(lines: list[str]) -> str:
    return "\n  " + "\n  ".join(lines)


def test_no_module_over_400_lines(fig):
    over = [f"{m.file}: {m.lines} lines" for m in fig.modules if m.lines > MAX_MODULE_LINES]
    assert not over, f"modules over {MAX_MODULE_LINES} lines:" + _listing(over)


def test_no_function_over_60_lines(fig):
    over = [f"{f.name} ({f.file}:{f.line}): {f.lines} lines" for f in fig.functions if f.lines > MAX_FUNCTION_LINES]
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines:" + _listing(over)


def test_no_import_cycle(fig):
    cycles = [f"[{', '.join(c.members)}]: {c.describe()}" for c in fig.cycles]
    assert not cycles, "import cycles:" + _listing(cycles)


def test_no_stage_imports_a_stage_above_it(fig):
    found = [v.describe() for v in fig.layer_violations] + [f"{n}: in no layer" for n in fig.unlayered]
    assert not found, "layer violations (see LAYERS in scripts/code_figures.py):" + _listing(found)


def test_metric_keys_are_parsed_only_in_the_contract_module(fig):
    found = [s.describe() for s in fig.metric_patterns]
    assert not found, "metric-key patterns outside robusteval/metrics.py:" + _listing(found)


def test_the_real_package_is_measured(fig):
    names = {m.name for m in fig.modules}
    assert {"robusteval", "robusteval.cli", "robusteval.engine"} <= names
    assert len(fig.functions) > 100


# --- the tool itself, on synthetic packages named robusteval so that the layers apply ---

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "robusteval"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_cycle_is_found_with_a_shortest_path(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "errors.py": "from robusteval.registry import Registry\n",
        "registry.py": "import robusteval.escaping\n",
        "escaping.py": "from robusteval import errors\n",  # a submodule named in from-import
        "files.py": "from robusteval.errors import x\n",
    }))
    assert [c.members for c in fig.cycles] == [("robusteval.errors", "robusteval.escaping", "robusteval.registry")]
    assert fig.cycles[0].describe() == ("robusteval.errors -> robusteval.registry (line 1 of robusteval.errors)"
                                        " -> robusteval.escaping (line 1 of robusteval.registry)"
                                        " -> robusteval.errors (line 1 of robusteval.escaping)")
    assert "shortest: robusteval.errors -> " in cf.report(fig)


def test_a_cycle_through_a_package_init_is_found_but_not_one_through_the_own_package(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "data/__init__.py": "from robusteval.data.arrays import Arrays\n",
        "data/arrays.py": "from robusteval.data.cache import load\n",  # its own package: no edge to data/__init__
        "data/cache.py": "from robusteval.models.wrap import run\n",
        "models/__init__.py": "",
        "models/wrap.py": "def run():\n    from robusteval.data import Arrays\n",
    }))
    assert [c.members for c in fig.cycles] == [
        ("robusteval.data", "robusteval.data.arrays", "robusteval.data.cache", "robusteval.models.wrap")]
    clean = cf.figures(_package(tmp_path / "b", {
        "data/__init__.py": "from robusteval.data.arrays import Arrays\n",
        "data/arrays.py": "from robusteval.data.cache import load\n",
        "data/cache.py": "from . import bundled\n",
        "data/bundled.py": "",
    }))
    assert clean.cycles == []


def test_type_checking_imports_are_ignored(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "errors.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from robusteval.cli import main\n"
                     "    from robusteval.registry import Registry\n",
        "registry.py": "import typing\nimport robusteval.errors\nif typing.TYPE_CHECKING:\n    import robusteval.api\n"
                       "else:\n    import robusteval.escaping\n",
        "escaping.py": "",
        "cli.py": "",
        "api.py": "",
    }))
    assert fig.cycles == []
    assert fig.layer_violations == []
    assert [(e.importer, e.imported) for e in cf.import_edges(cf.load_modules(tmp_path / "robusteval"))] == [
        ("robusteval.registry", "robusteval.errors"), ("robusteval.registry", "robusteval.escaping")]


def test_a_function_level_import_counts(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "errors.py": "import robusteval.registry\n",
        "registry.py": "class R:\n    def f(self):\n        try:\n            from .errors import x\n"
                       "        except ImportError:\n            pass\n",
    }))
    assert [c.members for c in fig.cycles] == [("robusteval.errors", "robusteval.registry")]


def test_a_layer_violation_and_an_unlayered_module_are_found(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "pruning/__init__.py": "",
        "pruning/family.py": "def f():\n    from robusteval.analysis import curves\n",
        "analysis.py": "from robusteval.pruning.family import f\nimport robusteval.mystery\n",
        "mystery.py": "",
        "cli.py": "import robusteval.analysis\n",
    }))
    assert [v.describe() for v in fig.layer_violations] == [
        "robusteval.analysis [analysis] imports robusteval.mystery [unlayered] at line 2",
        "robusteval.pruning.family [pruning] imports robusteval.analysis [analysis] at line 2",
    ]
    assert fig.unlayered == ["robusteval.mystery"]


def test_metric_key_patterns_are_found_outside_the_contract_module_only(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "analysis.py": """\
            import re
            import fnmatch as fm
            from re import fullmatch as full
            NUMBER = r"[0-9.]+"
            KEY = re.compile(r"^corruption/(?P<name>[^/]+)/accuracy$")
            NOISE = re.compile(rf"^noise/(?P<eps>{NUMBER})/accuracy$")
            PLAIN = re.compile(r"^[0-9]+$")
            TABLE = {"ood": ("ood/*/auroc", "ood/mean"), "plain": ("*.png",)}
            def f(key):
                return fm.fnmatchcase(key, "x") or full("shift/" + "[a-z]+", key) or re.search(r"\\d", key)
            """,
        "metrics.py": "import re\nKEY = re.compile(r'^clean/accuracy$')\nGLOBS = ('adversarial/*/accuracy',)\n",
    }))
    assert [s.describe() for s in fig.metric_patterns] == [
        "robusteval/analysis.py:5  re.compile('^corruption/(?P<name>[^/]+)/accuracy$')",
        "robusteval/analysis.py:6  re.compile('^noise/(?P<eps>')",
        "robusteval/analysis.py:8  glob table entry 'ood/*/auroc'",
        "robusteval/analysis.py:10  fnmatch.fnmatchcase(...)",
        "robusteval/analysis.py:10  re.fullmatch('shift/')",
    ]


def test_sizes_are_physical_lines_and_def_to_last_line(tmp_path):
    fig = cf.figures(_package(tmp_path, {
        "errors.py": "import functools\n\n\n@functools.cache\ndef f(\n    x,\n):\n    return x\n\n\nclass C:\n"
                     "    def m(self):\n        def inner():\n            pass\n        return 1\n",
    }))
    by_name = {f.name: (f.line, f.lines) for f in fig.functions}
    assert by_name == {"robusteval.errors.f": (5, 4), "robusteval.errors.C.m": (12, 4),
                       "robusteval.errors.C.m.inner": (13, 2)}
    assert [(m.file, m.lines) for m in fig.modules] == [("robusteval/errors.py", 15), ("robusteval/__init__.py", 0)]
