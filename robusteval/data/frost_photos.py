"""The reference's frost photographs (github.com/hendrycks/robustness, ``ImageNet-C/create_c/frost1.png``
… ``frost5.jpg``), downloaded once into the robusteval cache as torchvision's data sets are, and checked
against their SHA-256. Offline (no network, ``ROBUSTEVAL_OFFLINE=1`` or ``data.download: false``) frost
falls back to the procedural textures, and the condition's note says so."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from robusteval.data.cache import cache_dir
from robusteval.errors import describe, warn
from robusteval.files import write_atomic

FROST_COMMIT = "8190fe329f5f072a06e3a2aea02bb5dda69aed9f"
"""The hendrycks/robustness commit the files are read from (they have not changed since 2018)."""
FROST_URL = "https://raw.githubusercontent.com/hendrycks/robustness/{commit}/ImageNet-C/create_c/{name}"
FROST_SHA256 = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}
"""The five photographs the reference draws from (``np.random.randint(5)``), by SHA-256."""
_TIMEOUT_S = 30.0


def frost_folder() -> Path:
    """Where the photographs are cached: ``<cache>/frost`` (see :func:`robusteval.data.cache.cache_dir`)."""
    return cache_dir() / "frost"


def offline() -> bool:
    return os.environ.get("ROBUSTEVAL_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def reference_frost_photos(*, download: bool = True) -> Path | None:
    """The folder holding all five checked photographs, downloading the missing ones when ``download`` and
    not offline; None when they are not all there (a failed download warns once and changes nothing)."""
    folder = frost_folder()
    missing = [name for name in FROST_SHA256 if not _valid(folder / name)]
    if not missing:
        return folder
    if not download or offline():
        return None
    try:
        for name in missing:
            fetch(name, folder / name)
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
        warn(f"frost: the reference photographs are not in {folder} and could not be downloaded "
             f"({describe(exc)}); using the procedural textures (set evaluate.corruption.frost_dir to a copy)")
        return None
    return folder


def fetch(name: str, path: Path) -> None:
    """Download ``name`` from :data:`FROST_URL` to ``path`` (atomically), refusing a wrong checksum."""
    url = FROST_URL.format(commit=FROST_COMMIT, name=name)
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 (a fixed https URL)
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != FROST_SHA256[name]:
        raise ValueError(f"{url} has SHA-256 {digest}, expected {FROST_SHA256[name]}")
    write_atomic(path, lambda f: f.write(payload))


def _valid(path: Path) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == FROST_SHA256[path.name]
