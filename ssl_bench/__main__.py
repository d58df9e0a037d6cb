"""``python -m ssl_bench`` = ``ssl-bench``."""
from .cli import main

main()
