"""Data sources, arrays and corruptions. Importing it runs :mod:`robusteval.device`, which switches TF32 off."""
from robusteval import device as _device  # noqa: F401
