"""Built-in transfer strategies; importing this package registers them in ``TRANSFERS``."""
from . import collaborative, finetune, frozen, multitask, multiview, nonspatial  # noqa: F401
