"""Built-in pretext tasks; importing this package registers them in ``PRETEXTS``."""
from . import (  # noqa: F401
    barlowtwins,
    byol,
    context_restoration,
    dino,
    gsim,
    mae,
    moco,
    nnclr,
    none,
    simclr,
    simsiam,
    swav,
    vicreg,
)
