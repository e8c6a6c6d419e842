#!/usr/bin/env bash
# The GPU benchmark set in one call, within 10 minutes on one H100 or H200: two runs.
#   1. eager: W0-W6 with W5 up to 1e8 generated parameters, and weight generation at 1e8 as a
#      fraction of the measured fp32 and TF32 matmul throughput (-eager.md/.json, -w5.png);
#   2. compiled: W0-W4 and W6, every hyperdnn and hand-written variant also under
#      torch.compile(fullgraph=True, mode="reduce-overhead") (CUDA graphs), eager rows beside
#      them (-compiled.md/.json). Each run has its own time limit, so a slow compilation cannot
#      cost the eager tables.
#
#   bash benchmarks/gpu.sh                     # results (JSON, markdown, W5 plot, logs) under $OUT
#   BENCH_DEVICE=cpu bash benchmarks/gpu.sh    # dry run of this very script on CPU (quick settings, one thread;
#                                              # compiled with aot_eager unless BENCH_COMPILE_BACKEND=inductor)
#   BENCH_WORKLOADS=W0,W3 bash benchmarks/gpu.sh   # a subset of the workloads for both runs
#
# Runs with the machine's own python3 and torch (a GPU machine without network access cannot
# install anything); this checkout's src/ goes on PYTHONPATH, so hyperdnn need not be installed.
# Peers: used if python3 already imports them, else installed from wheels in .whl/ when there
# (made here with: pip download --no-deps hypnettorch==0.0.4 hyperlight==0.0.5 -d .whl; both are
# pure Python and need numpy and matplotlib, which such images carry). A peer that is missing
# shows up in the tables as "not installed", it is not skipped silently.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
DEVICE="${BENCH_DEVICE:-cuda}"
PY="${PYTHON:-python3}"
if [ "$DEVICE" = cpu ]; then  # a dry run on a (possibly shared) CPU: no hurry
    LIMIT_EAGER="${BENCH_LIMIT_EAGER_S:-1200}"
    LIMIT_COMPILED="${BENCH_LIMIT_COMPILED_S:-1800}"
else
    LIMIT_EAGER="${BENCH_LIMIT_EAGER_S:-200}"        # the eager run
    LIMIT_COMPILED="${BENCH_LIMIT_COMPILED_S:-330}"  # the compiled run (compilation included)
fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bench-site .whl/*.whl \
        && export PYTHONPATH="/tmp/bench-site:$PYTHONPATH"
fi

{
    echo "== $(date -u +%FT%TZ) device=$DEVICE"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
    "$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, p.multi_processor_count, "SMs", round(p.total_memory / 2**30, 1), "GiB")
for name in ("hypnettorch", "hyperlight", "matplotlib", "numpy"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "NOT IMPORTABLE:", type(exc).__name__, exc)
EOF
} 2>&1 | tee "$OUT/gpu-env.txt"

if [ "$DEVICE" = cpu ]; then
    args=(--device cpu --quick --threads 1 --clock cpu)
    compiled=(--compiled --compile_backend "${BENCH_COMPILE_BACKEND:-aot_eager}" --workloads W0,W1,W2,W3,W4,W6)
else
    # GPU steps are short and host-bound: more steps per round, more warm-up (cuBLAS/cuDNN
    # heuristics, allocator; CUDA graphs record after a few calls), W5 up to 1e8 parameters
    # with the matmul-throughput fractions.
    args=(--device cuda --repeats 7 --steps 10 --warmup 5)
    compiled=(--compiled --compile_backend "${BENCH_COMPILE_BACKEND:-inductor}" --workloads W0,W1,W2,W3,W4,W6)
fi
if [ -n "${BENCH_WORKLOADS:-}" ]; then  # a subset for both runs (e.g. the smoke test: W0)
    args+=(--workloads "$BENCH_WORKLOADS")
    compiled=("${compiled[@]:0:3}")
fi
status=0
timeout "$LIMIT_EAGER" "$PY" benchmarks/run.py "${args[@]}" --tag eager --out "$OUT" 2>&1 | tee "$OUT/gpu-log-eager.txt"
status=$(( status | PIPESTATUS[0] ))
timeout "$LIMIT_COMPILED" "$PY" benchmarks/run.py "${args[@]}" "${compiled[@]}" --tag compiled --out "$OUT" 2>&1 \
    | tee "$OUT/gpu-log-compiled.txt"
status=$(( status | PIPESTATUS[0] ))
ls -l "$OUT"
exit "$status"
