"""Imports every built-in dataset module so that its decorator registers it in ``DATASETS``."""
from . import synthetic  # noqa: F401
