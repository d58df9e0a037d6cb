"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import barlowtwins, byol, context_restoration, dino, gsim, ijepa, mae, moco, msn, none, simclr, vicreg  # noqa: F401
