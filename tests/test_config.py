"""Run configuration: presets load, bad keys/types/values are one-line errors, the digest is stable."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robusteval.config import CONFIG_DIR, AuditConfig, config_from_dict, load_config
from robusteval.errors import RobustEvalError
from robusteval.pruning.settings import FinetuneSettings, PruneSettings

PRESETS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "gate.yaml")  # gate.yaml holds gate rules


def test_presets_exist() -> None:
    assert "clean.yaml" in [p.name for p in PRESETS]


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, AuditConfig)
    assert load_config(path.stem) == config  # a bare name finds configs/<name>.yaml
    assert config_from_dict(config.to_dict()) == config  # what a manifest stores reads back


def test_clean_preset_evaluates_only_the_given_model() -> None:
    config = load_config("clean")
    assert config.pruning is None and config.evaluate.clean and config.data.source == "bundled"


def test_defaults() -> None:
    assert load_config(None) == AuditConfig() == config_from_dict({})


def _error(data: Any) -> str:
    with pytest.raises(RobustEvalError) as exc:
        config_from_dict(data)
    text = str(exc.value)
    assert "\n" not in text, f"expected a one-line message, got {text!r}"
    return text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"datta": {}}, "config: unknown key 'datta' (did you mean 'data'?)"),
        ({"data": {"sourse": "bundled"}}, "config: data: unknown key 'sourse' (did you mean 'source'?)"),
        ({"evaluate": {"corruption": {"severity": [1]}}},
         "evaluate.corruption: unknown key 'severity' (did you mean 'severities'?)"),
        ({"pruning": {"finetune": {"epoch": 1}}}, "pruning.finetune: unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"evaluate": {"ood": {"scores": {"score": ["msp"]}}}},
         "evaluate.ood.scores: unknown key 'score' (did you mean 'scores'?)"),
    ],
)
def test_unknown_keys_suggest_and_name_the_section(data: dict[str, Any], expected: str) -> None:
    assert expected in _error(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "config: expected a mapping, got list"),
        ({"data": ["bundled"]}, "expected a mapping, got list"),
        ({"data": {"subset": "100"}}, "data.subset: expected int, got '100'"),
        ({"data": {"subset": True}}, "data.subset: expected int, got True"),
        ({"data": {"batch_size": 2.5}}, "data.batch_size: expected int, got 2.5"),
        ({"data": {"download": "yes"}}, "data.download: expected bool, got 'yes'"),
        ({"model": {"mean": "0.5,0.5,0.5"}}, "model.mean: expected a list, got '0.5,0.5,0.5'"),
        ({"model": {"mean": [0.5, "x"]}}, "model.mean[1]: expected float, got 'x'"),
        ({"evaluate": {"corruption": {"severities": 3}}}, "evaluate.corruption.severities: expected a list, got 3"),
        ({"analysis": {"tolerances": {"clean/accuracy": "a"}}}, "analysis.tolerances.clean/accuracy: expected float"),
        ({"threads": True}, "threads: expected int, got True"),
    ],
)
def test_wrong_types(data: Any, expected: str) -> None:
    assert expected in _error(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"data": {"subset": -1}}, "subset must be positive, got -1"),
        ({"data": {"subset": 0}}, "subset must be positive, got 0"),
        ({"data": {"batch_size": 0}}, "batch_size must be positive"),
        ({"evaluate": {"corruption": {"subset": -5}}}, "evaluate.corruption: subset must be positive, got -5"),
        ({"evaluate": {"corruption": {"severities": [0, 6]}}},
         "severities must be a non-empty list from 1 to 5, got [0, 6]"),
        ({"evaluate": {"corruption": {"severities": []}}}, "severities must be a non-empty list from 1 to 5"),
        ({"evaluate": {"corruption": {"corruptions": ["gausian_noise"]}}},
         "unknown corruption 'gausian_noise' (did you mean 'gaussian_noise'?)"),
        ({"evaluate": {"ood": {"sets": ["blob"]}}}, "unknown synthetic OOD set 'blob' (did you mean 'blobs'?)"),
        ({"evaluate": {"noise": {"eps": [20]}}}, "noise eps must be a non-empty list in [0, 10]"),
        ({"evaluate": {"calibration": {"bins": 0}}}, "calibration bins: expected a positive integer, got 0"),
        ({"pruning": {"methods": ["magnitud"]}}, "unknown pruning method 'magnitud' (did you mean 'magnitude'?)"),
        ({"pruning": {"ratios": [0.5, 1.0]}}, "prune ratio must lie in [0, 1)"),
        ({"pruning": {"ratios": [-0.1]}}, "prune ratio must lie in [0, 1)"),
        ({"pruning": {"schedule": "gradual"}}, "schedule must be one of one_shot, iterative, got 'gradual'"),
    ],
)
def test_bad_values(data: dict[str, Any], expected: str) -> None:
    assert expected in _error(data)


def test_null_sections() -> None:
    config = config_from_dict({"evaluate": {"corruption": None, "calibration": None}, "pruning": None})
    assert config.evaluate.corruption is None and config.evaluate.calibration is None and config.pruning is None
    on = config_from_dict({"evaluate": {"corruption": {}}})  # an empty section means "on, with defaults"
    assert on.evaluate.corruption is not None and on.evaluate.corruption.severities == (1, 2, 3, 4, 5)


def test_yaml_files(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  source: npz:/data/x.npz\n  subset: 500\npruning:\n  methods: [magnitude, l1_filter]\n"
                    "  ratios: [0.5, 0.9]\n")
    config = load_config(path)
    assert config.data.subset == 500 and config.pruning is not None and config.pruning.ratios == (0.5, 0.9)
    assert config.pruning.methods == ("magnitude", "l1_filter")
    path.write_text("data: [unclosed\n")
    with pytest.raises(RobustEvalError, match="is not valid YAML"):
        load_config(path)
    path.write_text("")
    assert load_config(path) == AuditConfig()
    with pytest.raises(RobustEvalError, match="config file .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(RobustEvalError, match=f"{path}: data: unknown key"):
        path.write_text("data:\n  sorce: bundled\n")
        load_config(path)


def test_digest_is_stable_and_changes_with_values() -> None:
    base = {"data": {"subset": 500}, "pruning": {"methods": ["magnitude"], "ratios": [0.5, 0.9]}}
    digest = config_from_dict(base).digest()
    assert len(digest) == 16 and digest == config_from_dict(base).digest()
    assert config_from_dict({"pruning": base["pruning"], "data": base["data"]}).digest() == digest  # key order
    for changed in (
        {**base, "data": {"subset": 501}},
        {**base, "pruning": {"methods": ["magnitude"], "ratios": [0.5, 0.8]}},
        {**base, "pruning": {"methods": ["magnitude"], "ratios": [0.9, 0.5]}},
        {**base, "evaluate": {"corruption": {}}},
    ):
        assert config_from_dict(changed).digest() != digest


def test_digest_equal_for_equal_configs() -> None:
    """Spelling out a default (``epochs: 0`` reads as 0.0) or building in Python must not change the digest."""
    implicit = config_from_dict({"pruning": {"ratios": [0.5], "finetune": {"epochs": 0}}})
    explicit = config_from_dict({"pruning": {"ratios": [0.5], "finetune": {"epochs": 0, "max_images": 10000}}})
    python = AuditConfig(pruning=PruneSettings(ratios=(0.5,), finetune=FinetuneSettings(epochs=0)))
    assert implicit == explicit == python
    assert implicit.digest() == explicit.digest() == python.digest()
    assert config_from_dict(implicit.to_dict()).digest() == implicit.digest()


def test_yaml_exponent_floats_and_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("analysis: {tolerance: 1.0e-2, tolerances: {clean/: 2E-3}}\ndata: {subset: 100}\n")
    config = load_config(path)
    assert config.analysis.tolerance == 0.01 and config.analysis.tolerances == {"clean/": 0.002}
    assert config.data.subset == 100
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RobustEvalError, match=r"c\.yaml is not UTF-8 text"):
        load_config(path)


def test_where_may_contain_colons() -> None:
    with pytest.raises(RobustEvalError) as info:
        config_from_dict({"data": {"source": "foo:bar"}}, where="--data foo:bar")
    assert str(info.value) == ("--data foo:bar: data: unknown data source kind 'foo'; known: bundled, cifar10, "
                               "cifar10-c, cifar10.1, cifar10.2, cifar100, cifar100-c, cinic10, imagefolder, "
                               "imagenet, imagenet-a, imagenet-c, imagenet-r, imagenet-v2, npz, svhn")
    with pytest.raises(RobustEvalError, match=r"^C:\\run\.yaml: data\.seed: expected int, got 'x'$"):
        config_from_dict({"data": {"seed": "x"}}, where="C:\\run.yaml")


def test_adversarial_batch_size_follows_the_evaluation_batch_size() -> None:
    follows = config_from_dict({"data": {"batch_size": 64}, "evaluate": {"adversarial": {}}})
    assert follows.evaluate.adversarial is not None and follows.evaluate.adversarial.batch_size == 64
    own = config_from_dict({"data": {"batch_size": 64}, "evaluate": {"adversarial": {"batch_size": 30}}})
    assert own.evaluate.adversarial is not None and own.evaluate.adversarial.batch_size == 30
    assert config_from_dict({"evaluate": {"adversarial": {}}}) == config_from_dict(
        {"evaluate": {"adversarial": {"batch_size": 250}}})  # the default is the default evaluation batch size


def test_autoattack_null_turns_it_off_like_off() -> None:
    off = config_from_dict({"evaluate": {"adversarial": {"autoattack": "off"}}})
    null = config_from_dict({"evaluate": {"adversarial": {"autoattack": None}}})
    assert null.evaluate.adversarial.autoattack == "off" and null.digest() == off.digest()
