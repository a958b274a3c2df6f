"""The Ray executor joins a multi-node cluster by address (``engine: {address: ...}``): a simulated cluster of a
head without CPUs and one worker node, so every task (pruning, shards, attacks) runs on the other node."""
from __future__ import annotations

import pytest

from robusteval.api import audit
from robusteval.config import config_from_dict
from robusteval.models.bundled import BUNDLED_ARCH, BUNDLED_MODEL
from robusteval.records import Record
from robusteval.results import RunDir

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'robusteval[ray]')")
from ray.cluster_utils import Cluster  # noqa: E402  (after the skip: Ray may be absent)

CONFIG = {
    "device": "cpu",
    "data": {"source": "bundled", "subset": 20, "batch_size": 10, "shard_size": 10},
    "model": {"arch": BUNDLED_ARCH},
    "pruning": {"methods": ["magnitude"], "ratios": [0.5], "finetune": {"epochs": 0}, "measure_latency": False},
    "evaluate": {"calibration": None, "agreement": True, "noise": {"eps": [0.1], "subset": 10},
                 "adversarial": {"sample_size": 10, "batch_size": 10, "linf_eps": [0.0039216], "l2_eps": [],
                                 "attacks": ["fgsm"], "autoattack_eps": [], "min_norm": [], "transfer": [],
                                 "large_eps": None}},
}


@pytest.fixture
def cluster():
    if ray.is_initialized():  # another module's instance: this test must join the cluster itself
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert len(cluster.list_all_nodes()) == 2
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _records(run: RunDir) -> dict[tuple[str, str], Record]:
    return {(r.model, r.condition): r for r in run.records()}


def test_the_ray_executor_joins_a_two_node_cluster_by_address_with_the_local_engines_records(cluster, tmp_path):
    engine = {"kind": "ray", "address": cluster.address}
    audit(BUNDLED_MODEL, config=config_from_dict({**CONFIG, "engine": engine}), out=tmp_path / "ray", progress=False)
    assert not ray.is_initialized()  # joined by the audit, and left when it ended
    audit(BUNDLED_MODEL, config=config_from_dict(CONFIG), out=tmp_path / "local", progress=False)
    remote, local = _records(RunDir(tmp_path / "ray")), _records(RunDir(tmp_path / "local"))
    assert remote.keys() == local.keys() == {(m, c) for m in ("dense", "magnitude@0.5")
                                             for c in ("clean", "noise/0.1", "adversarial")}
    for key, record in local.items():
        assert [getattr(remote[key], f) for f in ("n", "correct", "predicted")] == \
            [getattr(record, f) for f in ("n", "correct", "predicted")], key
        assert remote[key].metrics == pytest.approx(record.metrics, abs=1e-6, nan_ok=True), key
