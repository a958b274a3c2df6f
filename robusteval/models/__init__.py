"""Models: architectures, loading, checkpoints, wrapping. Importing it runs :mod:`robusteval.device`, which switches TF32 off."""
from robusteval import device as _device  # noqa: F401
