"""Where a model comes from: a local file, the Hugging Face cache, or torchvision's weights. Offline first.

- ``hf-hub:<org>/<repo>[@revision]``: the repository's ``model.safetensors``, read from the local
  Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``);
  downloaded into it only when missing and online. A timm-style ``config.json`` beside it
  (``"architecture": "resnet18"``) supplies ``--arch timm:resnet18`` when none is given.
- ``torchvision:<name>:<WEIGHTS>`` (e.g. ``torchvision:resnet50:IMAGENET1K_V2``): the weights file
  of that torchvision enum in the torch hub cache (``$TORCH_HOME/hub/checkpoints``), checked to
  be plain weights (no pickled code) before torchvision's own builder loads it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from robusteval.errors import RobustEvalError, describe
from robusteval.models.wrap import LogitsOf
from robusteval.registry import unknown_name_message

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
TORCHVISION_PREFIX = "torchvision:"
HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class ModelSource:
    """A model reference resolved to a local file (the file whose sha256 the run records).

    ``arch`` and ``num_classes`` are what the source itself says (an explicit ``--arch`` wins);
    ``build`` builds the whole model when the source is more than weights (torchvision's builders).
    """

    path: Path
    label: str
    arch: str | None = None
    num_classes: int | None = None
    build: Callable[[], nn.Module] | None = None


def resolve_model(spec: str | Path | ModelSource) -> ModelSource:
    """A path, ``hf-hub:<org>/<repo>[@revision]`` or ``torchvision:<name>:<WEIGHTS>`` as a local file."""
    if isinstance(spec, ModelSource):
        return spec
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return _hf_hub(text)
    if text.startswith(TORCHVISION_PREFIX) and not Path(text).exists():
        return _torchvision_weights(text)
    return ModelSource(Path(spec), text)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, with huggingface_hub's precedence of variables, read at call time."""
    home = os.getenv("HF_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                "huggingface")
    cache = os.getenv("HF_HUB_CACHE") or os.getenv("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hf_offline() -> bool:
    return (os.getenv("HF_HUB_OFFLINE") or os.getenv("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE


def _hf_hub(spec: str) -> ModelSource:
    repo, _, revision = spec[len(HF_PREFIX):].partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise RobustEvalError(f"{spec}: expected hf-hub:<org>/<repo> or hf-hub:<org>/<repo>@<revision>")
    try:
        import huggingface_hub
    except ImportError:
        raise RobustEvalError(f"{spec} needs huggingface_hub: pip install 'robusteval[hub]'") from None
    cache, rev = hf_cache_dir(), revision or None

    def cached(filename: str) -> Path | None:
        found = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=cache, revision=rev)
        return Path(found) if isinstance(found, str) else None

    folder = cache / f"models--{repo.replace('/', '--')}"
    path, config = cached(HF_WEIGHTS), cached(HF_CONFIG)
    if path is None and hf_offline():
        raise RobustEvalError(f"{spec}: {HF_WEIGHTS} is not in the Hugging Face cache ({folder}) and HF_HUB_OFFLINE "
                              "is set; download it once online, or copy the repository's cache folder there")
    if path is None:
        try:
            path = Path(huggingface_hub.hf_hub_download(repo, HF_WEIGHTS, revision=rev, cache_dir=cache))
        except Exception as exc:  # no network, unknown repo, missing file, auth: many types
            raise RobustEvalError(f"{spec}: {HF_WEIGHTS} is not in the Hugging Face cache ({folder}) and "
                                  f"downloading it failed ({describe(exc)})") from exc
        try:
            config = Path(huggingface_hub.hf_hub_download(repo, HF_CONFIG, revision=rev, cache_dir=cache))
        except Exception:  # config.json is optional: without it, --arch says what the weights are
            config = None
    if config is not None and (classes := _transformers_classes(config)) is not None:
        return ModelSource(path, spec, None, classes, functools.partial(_transformers_model, path.parent, spec))
    arch, classes = _timm_config(config, spec) if config is not None else (None, None)
    return ModelSource(path, spec, arch, classes)


def _transformers_classes(path: Path) -> int | None:
    """The class count of a transformers image-classification ``config.json`` (``architectures``
    ``[...ForImageClassification]``), None for any other config."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # _timm_config reports unreadable JSON
    names = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(names, list) or not any(str(n).endswith("ForImageClassification") for n in names):
        return None
    labels = config.get("id2label") or {}
    return len(labels) if labels else config.get("num_labels")


def _transformers_model(folder: Path, spec: str) -> nn.Module:
    """The snapshot's model built by transformers from its own files, offline; it returns ``.logits``."""
    try:
        import transformers
    except ImportError:
        raise RobustEvalError(f"{spec} is a transformers model; building it needs transformers: "
                              "pip install 'robusteval[hf]'") from None
    try:
        # local files only; no hub kernels (transformers >= 5 would fetch code from the hub for some layers)
        model = transformers.AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True,
                                                                             use_kernels=False)
    except Exception as exc:  # transformers raises many types for configs it cannot build
        raise RobustEvalError(f"{spec}: transformers cannot build the model in {folder}: {describe(exc)}") from exc
    return LogitsOf(model)


def _timm_config(path: Path, spec: str) -> tuple[str | None, int | None]:
    """``timm:<architecture>`` and the class count from a timm-style config.json (None when absent)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RobustEvalError(f"{spec}: {path} is not readable JSON: {describe(exc)}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        return None, None
    classes = config.get("num_classes")
    pretrained = config.get("pretrained_cfg") or {}
    _normalisation_note(spec, pretrained.get("mean"), pretrained.get("std"))
    return f"timm:{config['architecture']}", classes if isinstance(classes, int) else None


def _normalisation_note(spec: str, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    if mean and std:
        log.warning("%s was trained on inputs normalised with --mean %s --std %s; pass them (robusteval feeds "
                    "images in [0, 1])", spec, ",".join(f"{m:g}" for m in mean), ",".join(f"{s:g}" for s in std))


def _torchvision_weights(spec: str) -> ModelSource:
    import torchvision.models as tvm

    parts = spec.split(":")
    if len(parts) != 3:
        raise RobustEvalError(f"{spec}: a torchvision model file is named torchvision:<name>:<WEIGHTS>, e.g. "
                              "torchvision:resnet50:IMAGENET1K_V2 (torchvision:<name> alone is an --arch)")
    _, name, weights_name = parts
    names = tvm.list_models(module=tvm)
    if name not in names:
        raise RobustEvalError(unknown_name_message("torchvision model", name, names))
    members = tvm.get_model_weights(name).__members__
    if weights_name not in members:
        raise RobustEvalError(unknown_name_message(f"weights for torchvision:{name}", weights_name, members))
    weights = members[weights_name]
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    _fetch_plain_weights(spec, weights.url, path)
    transforms = weights.transforms()
    _normalisation_note(spec, getattr(transforms, "mean", None), getattr(transforms, "std", None))
    return ModelSource(path, spec, f"torchvision:{name}", len(weights.meta["categories"]),
                       build=lambda: tvm.get_model(name, weights=weights))


def _fetch_plain_weights(spec: str, url: str, path: Path) -> None:
    """Make sure ``path`` holds plain weights: read it weights-only (downloading it first when missing)."""
    try:
        if path.is_file():
            torch.load(path, map_location="cpu", weights_only=True)
        else:
            torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                               weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RobustEvalError(f"{spec}: {path} is not a plain weights file (it holds pickled objects), so it is "
                              "not loaded; delete it to download the real one") from exc
    except Exception as exc:  # no network, truncated file, hash mismatch: many types
        where = "is unreadable" if path.is_file() else "is not in the torch hub cache and downloading it failed"
        raise RobustEvalError(f"{spec}: {path} {where} ({describe(exc)}); copy the file there "
                              "(TORCH_HOME moves the cache)") from exc
