"""ssl_bench: benchmark self-supervised pretext tasks and transfer strategies for medical image
classification (mammography first), after TSBN (task-driven self-supervised bi-channel networks)."""
__version__ = "0.1.0"
