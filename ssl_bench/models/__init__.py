"""Built-in networks that timm lacks and the toolkit's own classifiers; importing this package
registers them in ``NETWORKS`` and ``CLASSIFIERS``."""
from . import frozen_probe, multiview, nonspatial, nonspatial_trees, rdn, unet  # noqa: F401
