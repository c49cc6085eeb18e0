#!/usr/bin/env bash
# Makes target/bench-venv (onnxruntime 1.31.1, for `forgec bench --compare onnxruntime`), then
# benchmarks every shared model against onnxruntime and writes the README's table.
# Usage: scripts/bench.sh [--no-readme]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnxruntime, onnx" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "onnxruntime==1.31.1" "onnx==1.23.2" numpy
fi
cargo build --release --quiet
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/openblas.json" "$OUT/fma_peak.json"
# A 1024^3 f32 matmul graph (weights random), the kernel's yardstick.
"$VENV/bin/python" scripts/matmul_onnx.py 1024 "$OUT/matmul1024.onnx"
M=tests/fixtures/models
./target/release/forgec bench "$OUT/matmul1024.onnx" --batch 1024 --threads 1,2 \
    --compare onnxruntime --python "$VENV/bin/python" --json "$OUT/matmul1024.json"
# The machine's ceiling right after: numpy's OpenBLAS on the same product, 1 and 2 threads.
for t in 1 2; do
    OPENBLAS_NUM_THREADS=$t "$VENV/bin/python" - "$t" "$OUT/openblas.json" <<'PY'
import json, os, sys, time
import numpy as np
t, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
a = rng.standard_normal((1024, 1024)).astype(np.float32)
b = rng.standard_normal((1024, 1024)).astype(np.float32)
for _ in range(3):
    a @ b
times, start = [], time.perf_counter()
while time.perf_counter() - start < 1.0 or len(times) < 10:
    s = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - s)
times.sort()
doc = json.load(open(path)) if os.path.exists(path) else {}
doc[str(t)] = 2 * 1024**3 / times[len(times) // 2] / 1e9
json.dump(doc, open(path, "w"))
PY
done
# And the machine's multiply-add peak (registers only, no memory): the most any kernel could do.
cc -O2 -march=native -ffp-contract=fast -o "$OUT/fma_peak" scripts/fma_peak.c -lpthread
printf '{"1": %s, "2": %s}\n' "$("$OUT/fma_peak" 1)" "$("$OUT/fma_peak" 2)" > "$OUT/fma_peak.json"
for m in mlp_binary mlp_dropout mlp_mnist cnn_mnist functional_two_in_two_out mobilenetv2_035_96 lstm_seq text_embed; do
    ./target/release/forgec bench "$M/$m.keras" --batch 1,32 --threads 1,2 \
        --compare onnxruntime --python "$VENV/bin/python" --json "$OUT/$m.json"
done
# ONNX models run their channels-first layers channels-last (the layout passes).
for m in cnn_mnist mobilenetv2_035_96; do
    ./target/release/forgec bench "$M/$m.onnx" --batch 1,32 --threads 1,2 \
        --compare onnxruntime --python "$VENV/bin/python" --json "$OUT/$m.onnx.json"
done
if [ "${1:-}" != "--no-readme" ]; then
    python3 scripts/bench_table.py "$OUT" README.md
    echo "README.md: benchmark table updated"
fi
