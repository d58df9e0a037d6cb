"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import context_restoration, gsim, none, simclr  # noqa: F401
