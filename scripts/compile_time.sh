#!/usr/bin/env bash
# Compile time and peak memory of `forgec compile`: mobilenetv2_035_96, and a
# 4096x4096 matmul graph (64 MB of weights) with embedded and with external weights.
# Usage: scripts/compile_time.sh   (needs target/bench-venv from scripts/bench.sh, for onnx)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
OUT=target/compile-time
mkdir -p "$OUT"
target/bench-venv/bin/python scripts/matmul_onnx.py 4096 "$OUT/matmul4096.onnx"
run() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(["./target/release/forgec", "compile", *sys.argv[2:]], check=True, stdout=subprocess.DEVNULL)
mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{sys.argv[1]}: {time.perf_counter() - t:.2f} s, {mb:.0f} MB peak")
PY
}
run "mobilenetv2_035_96" tests/fixtures/models/mobilenetv2_035_96.keras -o "$OUT/mobilenet"
run "matmul4096 (64 MB weights, embedded)" "$OUT/matmul4096.onnx" -o "$OUT/embedded"
run "matmul4096 (64 MB weights, external)" "$OUT/matmul4096.onnx" -o "$OUT/external" --weights external
