"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import barlowtwins, context_restoration, gsim, none, simclr, vicreg  # noqa: F401
