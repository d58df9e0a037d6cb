"""Executors that run benchmark jobs; importing this package registers them in ``EXECUTORS``.

``ray`` is registered here too, but imports Ray only when it runs (an optional dependency).
"""
from . import local, ray_executor  # noqa: F401
