"""The robustbench adapter: robustbench imports, and ``autoattack`` resolves to pyautoattack's objects."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from robusteval.compat import autoattack_module, import_robustbench
from robusteval.errors import RobustEvalError

FRESH_INTERPRETER = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore")
    assert "autoattack" not in sys.modules and "robustbench" not in sys.modules
    from robusteval.compat import import_robustbench
    rb = import_robustbench()
    import autoattack, pyautoattack
    import pyautoattack.state
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState
    import autoattack.autopgd_base as aliased
    import pyautoattack.autopgd_base as real
    from robustbench.data import load_cifar10c
    from robustbench.utils import load_model
    assert rb is sys.modules["robustbench"]
    assert autoattack is pyautoattack and AutoAttack is pyautoattack.AutoAttack
    assert EvaluationState is pyautoattack.state.EvaluationState and aliased is real
    assert callable(load_cifar10c) and callable(load_model)
    print("ok")
    """
)


def test_import_robustbench_in_a_fresh_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", FRESH_INTERPRETER], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_aliases_in_this_process() -> None:
    robustbench = import_robustbench()
    import pyautoattack
    import pyautoattack.state

    import autoattack
    from autoattack.state import EvaluationState
    from robustbench.data import load_cifar10c

    assert autoattack is pyautoattack is autoattack_module() is autoattack_module()
    assert EvaluationState is pyautoattack.state.EvaluationState
    assert load_cifar10c is robustbench.data.load_cifar10c


def test_missing_pyautoattack_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "autoattack", raising=False)
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes `import pyautoattack` fail
    with pytest.raises(RobustEvalError, match="AutoAttack is not installed: pip install pyautoattack"):
        autoattack_module()


def test_broken_robustbench_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "robustbench", None)
    with pytest.raises(RobustEvalError, match="cannot import robustbench") as exc:
        import_robustbench()
    assert "\n" not in str(exc.value)


def test_missing_pkg_resources_names_the_fix() -> None:
    script = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("ignore")
        sys.modules["pkg_resources"] = None
        from robusteval.compat import import_robustbench
        from robusteval.errors import RobustEvalError
        try:
            import_robustbench()
        except RobustEvalError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    message = done.stdout + done.stderr[-2000:]
    assert "cannot import robustbench" in done.stdout and "setuptools<81" in done.stdout, message
