"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import (barlowtwins, byol, context_restoration, dino, dinov2, gsim, ibot, mae, moco, none, simclr,  # noqa: F401
               vicreg)
