"""``python -m ssl_bench.cli`` = ``ssl-bench``."""
from . import main

main()
