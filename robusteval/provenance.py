"""What a run records about how it was made (``manifest.json``): the command, config and its digest, the
device, every model's and the data's sha256, package versions and the machine; and the check that a
rerun on the same run directory resumes the same run."""
from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from robusteval import __version__
from robusteval.errors import RobustEvalError
from robusteval.results import RunDir

if TYPE_CHECKING:
    from robusteval.data.arrays import LabeledArrays
    from robusteval.session import Session

#: the dependencies whose installed versions the manifest records (robusteval's own: ``__version__``)
PACKAGES = ("torch", "torchvision", "foolbox", "robustbench", "pyautoattack", "torch-pruning",
            "numpy", "scipy")


def previous_manifest(run: RunDir) -> dict[str, Any] | None:
    """The manifest of the results ``run`` holds already (None: nothing recorded yet, a new run)."""
    return run.read_manifest() if run.models() or run.done() else None


def start_manifest(session: Session, clean: LabeledArrays, model_sha: dict[str, str], *,
                   frost: str | None = None) -> None:
    """Write the manifest; refuse to mix results of a different config into an existing run (one that
    recorded nothing yet, e.g. stopped by bad input, starts over). ``frost``: what generated frost is
    made with (``photographs``, ``procedural`` or ``frost_dir``), kept by a resumed run."""
    run = session.run
    old = previous_manifest(run)
    if old is not None and old.get("config_digest") != session.digest:
        raise RobustEvalError(f"{run.path} holds results of a different configuration; use a new --out")
    if old is not None and old.get("model_sha256") != model_sha:
        raise RobustEvalError(f"{run.path} holds results of a different model; use a new --out")
    manifest = old or _new_manifest(session, clean, model_sha)
    manifest["resumed"] = old is not None
    if frost is not None:
        manifest.setdefault("frost", frost)
    manifest["device"] = str(session.device)  # the latest run's, as the engine: a run may resume on another device
    manifest["engine"] = session.config.engine.kind  # the latest run's: a run may resume on the other engine
    run.write_manifest(manifest)


def _new_manifest(session: Session, clean: LabeledArrays, model_sha: dict[str, str]) -> dict[str, Any]:
    config = session.config
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(session.command),
        "config_digest": session.digest,
        "config": config.to_dict(),
        "seed": config.data.seed,
        "device": str(session.device),
        "precision": config.precision,
        "model_sha256": model_sha,
        "data": {"source": config.data.source, "n": len(clean), "classes": list(clean.classes),
                 "sha256": data_sha256(clean)},
        "versions": versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "threads": torch.get_num_threads()},
    }


def data_sha256(clean: LabeledArrays) -> str:
    """The evaluation data's images and labels, hashed as stored."""
    return hashlib.sha256(np.ascontiguousarray(clean.x).tobytes() + clean.y.tobytes()).hexdigest()


def state_sha256(model: nn.Module) -> str:
    """A module given in Python (no file to hash): its state dict, key and bytes of every tensor in order."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """robusteval's version, the installed version of each of :data:`PACKAGES` (those installed) and Python's."""
    out = {"robusteval": __version__}  # the code that ran, installed or not
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["python"] = sys.version.split()[0]
    return out
