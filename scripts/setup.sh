#!/usr/bin/env bash
# Installs what forgec needs on Debian 12, builds it, and runs its main job on a bundled model.
# Safe to run again: apt and cargo skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# LLVM 22 / MLIR 22 for the code generator (libclang for mlir-sys's bindgen, Polly because
# llvm-sys links it), HDF5 for Keras weights, zstd for linking LLVM, a TrueType font for the
# text of `forgec runs plot`.
PKGS="llvm-22-dev libmlir-22-dev mlir-22-tools libzstd-dev libclang-22-dev libpolly-22-dev libhdf5-dev pkg-config gcc binutils fonts-dejavu-core"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "forgec setup: installing$missing"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "forgec setup: no Rust toolchain found. Install one with rustup (Rust 1.85 or newer), then run this script again." >&2
  exit 1
fi

cargo build --release --bin forgec
F=./target/release/forgec
M=tests/fixtures/models
echo
echo "== forgec summary $M/cnn_mnist.keras"
$F summary $M/cnn_mnist.keras
echo
echo "== forgec check $M/cnn_mnist.keras"
$F check $M/cnn_mnist.keras
echo
out=$(mktemp -d)
echo "== forgec run $M/cnn_mnist.keras -i $M/cnn_mnist.input.npy -o $out"
$F run $M/cnn_mnist.keras -i $M/cnn_mnist.input.npy -o "$out"
