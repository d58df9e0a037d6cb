"""Imports every built-in dataset module so that its decorator registers it in ``DATASETS``."""
from . import cbis_ddsm, folder, inbreast, manifest, synthetic, vindr  # noqa: F401
