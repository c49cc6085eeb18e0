#!/usr/bin/env bash
# Makes the ONNX conformance suite (onnx 1.23.2) in target/onnx-suite and runs forgec on it.
# Usage: scripts/onnx_suite.sh [REPORT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/onnx-venv
SUITE=target/onnx-suite
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q onnx==1.23.2
fi
if [ ! -f "$SUITE/tolerances.json" ]; then
  "$VENV/bin/python" scripts/onnx_suite.py "$SUITE"
fi
cargo build -q --release --bin forgec
./target/release/forgec conformance "$SUITE" --report "${1:-target/onnx-conformance.json}"
