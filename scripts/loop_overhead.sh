#!/usr/bin/env bash
# The training loop's cost over the bare compiled step (issue 17's bound: 5%), on mlp_mnist and
# cnn_mnist: `forgec train --json-progress` reports each epoch's seconds and the seconds spent
# inside the compiled step; this sums them over epochs 3-15 (the first two warm caches), and
# prints `forgec bench --train` beside it (the step alone, the data's batches in turn).
#   bash scripts/loop_overhead.sh [BATCH...]   (default 25 32; needs target/release/forgec)
set -euo pipefail
cd "$(dirname "$0")/.."
F=target/release/forgec
M=tests/fixtures/models
D=tests/fixtures/training
batches=${*:-25 32}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
for m in mlp_mnist cnn_mnist; do
  for b in $batches; do
    rm -rf "$out/run"
    "$F" train "$M/$m.keras" --x "$D/$m.train_x.npy" --y "$D/$m.train_y.npy" --batch-size "$b" \
      --epochs 15 --track none --out "$out/run" --json-progress > "$out/events.jsonl"
    python3 - "$m" "$b" "$out/events.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[3])]
ep = [e for e in ev if e["event"] == "epoch"][2:]
total = sum(e["seconds"] for e in ep)
step = sum(e["step_seconds"] for e in ep)
print(f"{sys.argv[1]} batch {sys.argv[2]}: loop {1e3 * total / len(ep):.2f} ms/epoch, "
      f"step {1e3 * step / len(ep):.2f} ms/epoch: overhead {100 * (total / step - 1):.2f}%")
PY
    "$F" bench "$M/$m.keras" --train --x "$D/$m.train_x.npy" --y "$D/$m.train_y.npy" \
      --batch "$b" --threads 1 | tail -1 | sed "s/^/  forgec bench --train: /"
  done
done
