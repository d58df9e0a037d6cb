#!/usr/bin/env bash
# Render `ssl-bench report --format html` in headless Chromium, with the network blocked, and
# write a screenshot to look at.
#
#   benchmarks/check_report_html.sh [RUN_DIR...]       (no RUN_DIR: demo runs from the test fixtures)
#
# Needs Debian's chromium (apt-get install -y chromium). Prints the paths of the HTML page and of
# the screenshot; fails when the page does not render or the embedded ROC figure is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$browser" ]] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 2; }
work="$(mktemp -d)"
out="${OUT_DIR:-$work}"
mkdir -p "$out"

if [[ $# -eq 0 ]]; then
  PYTHONPATH="$repo:$repo/tests${PYTHONPATH:+:$PYTHONPATH}" python - "$work/runs" <<'EOF'
import sys
from pathlib import Path
from test_report import make_bench
import shutil
dirs = make_bench(Path(sys.argv[1]), {"ResNet": 0.9, "SimCLR": 1.2, "CR-F-ResNet": 1.0, "GM-F-ResNet": 1.3,
                                      "GM-M-ResNet": 1.25, "TSBN-U": 1.7, "TSBN-R": 1.5})
shutil.rmtree(dirs[2] / "folds" / "3")  # one partial run, to show the warning column
EOF
  set -- "$work"/runs/*
fi

(cd "$repo" && python -c "from ssl_bench.cli import main; main()" report "$@" \
   --reference benchmarks/table2_paper.csv --format html --out "$out/report.html")

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/profile" \
  --host-resolver-rules="MAP * ~NOTFOUND" --hide-scrollbars \
  --screenshot="$out/report.png" --window-size=1400,2000 "file://$out/report.html" \
  >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }

python - "$out/report.png" <<'EOF'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
colors = im.getcolors(1 << 20) or []
blue = sum(n for n, (r, g, b) in colors if abs(r - 31) < 30 and abs(g - 119) < 30 and abs(b - 180) < 30)
print(f"screenshot {im.size[0]}x{im.size[1]}, {len(colors)} colours, {blue} ROC-blue pixels")
if len(colors) < 50 or blue < 100:
    sys.exit("the page looks blank or the embedded ROC figure did not render")
EOF
echo "html:       $out/report.html"
echo "screenshot: $out/report.png"
