"""Built-in networks that timm lacks; importing this package registers them in ``NETWORKS``."""
from . import rdn, unet  # noqa: F401
