"""Executors that run benchmark jobs; importing this package registers them in ``EXECUTORS``."""
from . import local  # noqa: F401
