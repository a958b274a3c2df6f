"""configs/lost-in-pruning.yaml is the paper's setting (it runs end to end in tests/test_presets.py)."""
from __future__ import annotations

from robusteval import load_config
from robusteval.data.corruptions import BENCHMARK_CORRUPTIONS, DEFAULT_NOISE_EPS, EXTRA_CORRUPTIONS


def test_preset_is_the_papers_setting() -> None:
    config = load_config("lost-in-pruning")
    assert config.analysis.tolerance == 0.005  # δ = 0.5%
    assert config.pruning.methods == ("magnitude", "l1_filter") and config.pruning.schedule == "iterative"
    assert config.evaluate.noise.eps == DEFAULT_NOISE_EPS and config.evaluate.noise.subset == 1000
    assert set(config.evaluate.corruption.corruptions) == set(BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS)
    assert config.evaluate.adversarial is None and config.evaluate.agreement
