"""A family member and its archive: ``<id>.pt2`` (torch.export) with its ``<id>.json`` card, saved, reused
and reloaded without the original code."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.export.passes import move_to_device_pass

from robusteval.card import MemberCard
from robusteval.errors import RobustEvalError, describe, warn
from robusteval.pruning.settings import PruneSettings

FORMAT = "robusteval-family-member/1"


@dataclass(frozen=True)
class FamilyMember:
    """One model of the family (eval mode, masks folded into plain weights, no hooks) and its card."""

    card: MemberCard
    model: nn.Module

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def method(self) -> str:
        return self.card.method

    @property
    def target_ratio(self) -> float:
        return self.card.ratio

    @property
    def info(self) -> dict:
        """The card as its models.jsonl line (read-only; for readers of the dict members had before cards)."""
        return self.card.to_json()


class ExportedModel(nn.Module):
    """A reloaded ``torch.export`` program; ``train()``/``eval()`` are accepted and change nothing
    (the graph was exported in eval mode)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.program = module
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> ExportedModel:
        self.training = mode
        return self


def member_fingerprint(dense: nn.Module, settings: PruneSettings, example_input: torch.Tensor) -> str:
    """What a saved member depends on: dense weights, input shape and the settings (minus the grid)."""
    digest = hashlib.sha256()
    for key, tensor in dense.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    fields = dataclasses.asdict(settings)
    for key in ("methods", "ratios", "measure_latency", "latency_repeats", "latency_budget_s",
                "latency_share", "evaluated_images", "scratch_baseline"):
        fields.pop(key)
    digest.update(json.dumps([fields, list(example_input.shape[1:])], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def member_path(out_dir: Path, member_id: str) -> Path:
    """Where ``member_id`` is saved in ``out_dir``: its archive ``<id>.pt2``, with its card ``<id>.json`` beside it
    (the same path ``.with_suffix(".json")``)."""
    return Path(out_dir) / f"{member_id}.pt2"


def saved_member(out_dir: Path, member_id: str) -> Path | None:
    """The archive of ``member_id`` in ``out_dir`` when it is saved complete (archive and card), else None."""
    path = member_path(out_dir, member_id)
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def save_member(member: FamilyMember, out_dir: Path, *, example_input: torch.Tensor | None = None,
                fingerprint: str = "") -> Path:
    """Save as ``<id>.pt2`` (torch.export, dynamic batch, reloads without the original code) and
    ``<id>.json`` (the member's card). Returns the .pt2 path.

    A CPU copy of the model is exported, so the archive holds no accelerator tensors and reloads on
    any machine (:func:`load_member` moves it to a device)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = member.card.input_shape
    x = example_input if example_input is not None else torch.zeros(shape) if shape else None
    if x is None:
        raise RobustEvalError(f"saving {member.id}: expected an example input or the card's input_shape, got neither")
    x = x[:1].expand(2, *x.shape[1:]).contiguous().cpu()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    model = copy.deepcopy(member.model).cpu().eval()
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    path = member_path(out_dir, member.id)
    torch.export.save(program, path)
    meta = {"format": FORMAT, "id": member.id, "method": member.method, "target_ratio": member.target_ratio,
            "input_shape": [1, *x.shape[1:]], "fingerprint": fingerprint, "info": member.card.to_json()}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, allow_nan=False, default=float))
    return path


def load_member(path: Path, device: torch.device | str | None = None) -> FamilyMember:
    """Reload a member saved by :func:`save_member` (``<id>.pt2`` or its ``<id>.json``) onto ``device``
    (default CPU)."""
    path = Path(path)
    pt2, sidecar = path.with_suffix(".pt2"), path.with_suffix(".json")
    if not pt2.is_file() or not sidecar.is_file():
        raise RobustEvalError(f"expected a saved family member {pt2.name} with {sidecar.name}, got {path}")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != FORMAT:
        raise RobustEvalError(f"{sidecar}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    program = torch.export.load(pt2)
    if torch.device(device or "cpu").type != "cpu":
        program = move_to_device_pass(program, device)
    card = MemberCard.from_json({**meta["info"], "id": meta["id"], "method": meta["method"],
                                 "target_ratio": float(meta["target_ratio"]), "input_shape": meta["input_shape"]})
    return FamilyMember(card, ExportedModel(program.module()))


def reused(out_dir: Path | None, mid: str, fingerprint: str, device: torch.device) -> FamilyMember | None:
    """The member saved in ``out_dir`` as ``<mid>.pt2`` when it was built from the same ``fingerprint``, on
    ``device``; None when there is none, it was built otherwise, or it cannot be reloaded here."""
    archive = None if out_dir is None else saved_member(out_dir, mid)
    if archive is None:
        return None
    try:
        if json.loads(archive.with_suffix(".json").read_text()).get("fingerprint") != fingerprint:
            return None
    except json.JSONDecodeError:
        return None
    try:
        return load_member(archive, device)
    except Exception as exc:  # cut short by a kill, or saved on a device this machine lacks (CUDA archives)
        warn(f"saved member {mid} cannot be reloaded here ({describe(exc)}); rebuilding it")
        return None
