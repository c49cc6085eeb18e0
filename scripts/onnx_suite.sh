#!/usr/bin/env bash
# Makes the official ONNX conformance suite (onnx 1.23.2, from PyPI, in a venv under target/)
# and runs forgec on it. Usage: scripts/onnx_suite.sh [forgec conformance flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/onnx-venv
SUITE=target/onnx-suite
if [ ! -f "$SUITE/tolerances.json" ]; then
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnx" 2>/dev/null; then
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q onnx==1.23.2; }; then
      # CI sets ONNX_SUITE_OPTIONAL=1: a registry outage must not hide everything else.
      if [ "${ONNX_SUITE_OPTIONAL:-0}" = 1 ]; then
        echo "warning: could not install onnx 1.23.2 from PyPI: the ONNX conformance suite was not run"
        exit 0
      fi
      exit 1
    fi
  fi
  "$VENV/bin/python" scripts/onnx_suite.py "$SUITE"
fi
cargo build -q --release --bin forgec
./target/release/forgec conformance "$SUITE" --report target/onnx-conformance.json "$@"
