#!/usr/bin/env bash
# The one script to run on a lent GPU machine (see the final report of issue 6 for the call):
#   bash benchmarks/gpu_check.sh                 # on the GPU machine; results under $OUT
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # here: the same stages at tiny sizes on the CPU
#
# Stages (each with its own time limit, cut to fit a global deadline; a failed or timed-out
# stage is logged and the next one runs):
#   setup    install the carried wheels (.whl/: pydicom, lightly) into /tmp/site, check imports
#   tests    tests/test_fast_path.py: CPU equivalence + GPU no-sync, bf16, CUDA-graph tests
#   zoo      the newer pretexts (SwAV, DINO, MSN, I-JEPA) and the multiview transfer, smoke
#            benches on the GPU with bf16 and CUDA graphs: that they run, and which steps fall
#            back to eager (I-JEPA copies masks drawn on the CPU); log appended to tests.log
#   speed    benchmarks/speed.py: TSBN-U / ResNet50 steps at 768x384, batch 4 and 16, plain
#            reference vs ssl_bench vs ssl_bench + CUDA graphs; data (DICOM loader vs cache);
#            4 concurrent jobs vs 1
#   methods  the 7 Table II methods' epoch costs (eager and CUDA graphs) -> Table II projection
#   compile  TSBN-U batch 4 with torch.compile + CUDA graphs (last: compiling takes minutes)
# The GPU machine has no network: the paper profile's ImageNet initialisation
# (model.pretrained=imagenet) is switched off for every config speed.py builds
# (model.pretrained=none in its method_configs), since weights do not change step times.
# Files under $OUT (8 at most): summary.log tests.log speed.log speed.json methods.log
# methods.json compile.log compile.json
set -u
export PYTHONUNBUFFERED=1

DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.log
BUDGET=${GPU_CHECK_BUDGET:-550}   # seconds for all stages (the device tool allows 600 a call)
T0=$(date +%s)
PY=${PYTHON:-python3}

say() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME LIMIT_S COMMAND...: run with a limit cut to the time left; never aborts the script
stage() {
    local name=$1 limit=$2 left rc start log=${STAGE_LOG:-$1}
    shift 2
    left=$(( BUDGET - ($(date +%s) - T0) ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        say "=== [$name] SKIPPED: only ${left}s of the budget left"
        return 0
    fi
    say "=== [$name] $(date +%T) limit ${limit}s: $*"
    start=$(date +%s)
    timeout -k 10 "$limit" "$@" >>"$OUT/$log.log" 2>&1
    rc=$?
    [ "$rc" -eq 124 ] && say "=== [$name] TIMED OUT after ${limit}s"
    say "=== [$name] rc=$rc in $(( $(date +%s) - start ))s"
    return 0
}

say "gpu_check $(date -u +%FT%TZ) dry-run=$DRY root=$ROOT out=$OUT"

# ---- setup: carried wheels, the project from the working tree
SITE=${SITE:-/tmp/site}
[ "$DRY" = 1 ] && SITE=$OUT/.site
if ls .whl/*.whl >/dev/null 2>&1; then
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl >>"$SUMMARY" 2>&1; then
        export PYTHONPATH=$SITE:${PYTHONPATH:-}
        say "installed: $(ls .whl | tr '\n' ' ')"
    else
        say "WARNING: installing .whl/ failed (see above); going on with what is installed"
    fi
else
    say "no .whl/ folder: using the installed packages"
fi
export PYTHONPATH=$ROOT:${PYTHONPATH:-}
{
    [ "$DRY" = 0 ] && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv
    $PY - <<'EOF'
import importlib, os, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "cpus", os.cpu_count())
for m in ("timm", "pydicom", "lightly", "numpy", "pandas", "sklearn", "scipy", "rich", "click", "yaml"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"  {m} MISSING: {exc}")
import ssl_bench.experiment.fold, ssl_bench.transfer.collaborative, ssl_bench.pretext.simclr  # noqa
print("ssl_bench imports ok")
EOF
} >>"$SUMMARY" 2>&1

if [ "$DRY" = 1 ]; then
    DEV="--device cpu --small"
    BENCH_DEV="--device cpu"
    SPEED_EXTRA="--methods"
    JOBS=2
    COMPILE_RUN="--models resnet --variants reference,ssl_bench"  # no graphs on a CPU
else
    DEV="--device cuda"
    BENCH_DEV="--device cuda"
    SPEED_EXTRA=""
    JOBS=4
    COMPILE_RUN="--models tsbn_u --variants reference,ssl_bench_graphs"
fi

# ---- tests: equivalence on the CPU, then the GPU checks (skipped without CUDA)
stage tests 150 $PY -m pytest -q -rsxX -p no:cacheprovider tests/test_fast_path.py

# ---- zoo: the newer tasks and the multiview transfer run on the device (bf16 on CUDA by the
#      profile's precision "auto"), steps captured in CUDA graphs where they can be (8 files at
#      most come back from $OUT, so its log is tests.log)
ZOO=$(mktemp -d /tmp/gpu_zoo.XXXXXX)
STAGE_LOG=tests stage zoo 120 $PY -m ssl_bench bench benchmarks/ssl_zoo.yaml --profile smoke $BENCH_DEV \
    --folds 2 --only SwAV --only DINO --only MSN-ViT --only I-JEPA-ViT --set train.cuda_graphs=true \
    --explain 0 --quiet --out "$ZOO/zoo"
STAGE_LOG=tests stage multiview 60 $PY -m ssl_bench bench benchmarks/multiview.yaml --profile smoke $BENCH_DEV \
    --folds 2 --set train.cuda_graphs=true --explain 0 --quiet --out "$ZOO/multiview"

# ---- speed: steps (batch 4 and 16), data, jobs
if [ "$DRY" = 1 ]; then BATCHES=4; else BATCHES=4,16; fi
stage speed 180 $PY benchmarks/speed.py $DEV --batch "$BATCHES" --graphs --jobs-per-gpu "$JOBS" \
    $SPEED_EXTRA --json "$OUT/speed.json"

# ---- methods: per-method epoch costs, eager and graphs -> Table II projection
stage methods 130 $PY benchmarks/speed.py $DEV --batch 4 --skip steps,data --jobs-per-gpu 0 \
    --methods --methods-graphs --steps 8 --epochs 1 --previous "$OUT/speed.json" --json "$OUT/methods.json"

# ---- compile: torch.compile + CUDA graphs at batch 4 (slow to compile: last)
stage compile 200 $PY benchmarks/speed.py $DEV --batch 4 --compile --graphs --skip data --jobs-per-gpu 0 \
    $COMPILE_RUN --json "$OUT/compile.json"

# ---- the end of each log, so that the reply's output tail holds the numbers
for f in tests speed methods compile; do
    [ -f "$OUT/$f.log" ] || continue
    echo "----- $f.log (end)"
    case $f in
        tests) grep -E "passed|failed|error" "$OUT/$f.log" | tail -n 5; tail -n 30 "$OUT/$f.log" ;;
        *) sed -n '/=== summary/,$p' "$OUT/$f.log" | head -n 40; grep -E "FAILED|ERROR|Traceback" "$OUT/$f.log" | head -n 5 ;;
    esac
done
rm -f "$OUT"/*.tmp  # a JSON write cut short by a time limit: keep to the 8 files
say "gpu_check done in $(( $(date +%s) - T0 ))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
