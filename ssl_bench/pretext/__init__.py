"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import (barlowtwins, byol, context_restoration, dino, dinov2, gsim, ibot, ijepa, mae, moco, msn,  # noqa: F401
               none, simclr, vicreg)
