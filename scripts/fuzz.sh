#!/usr/bin/env bash
# Fuzzes the readers of untrusted model files (fuzz/, cargo-fuzz on nightly).
#   scripts/fuzz.sh SECONDS [TARGET...]   (targets: keras_json keras_zip hdf5_weights onnx npy)
# Seeds each target's corpus from tests/fixtures, runs each for SECONDS (one after another),
# and fails if a target finds a crash (fuzz/artifacts/TARGET/ holds the input). Without a
# nightly toolchain or cargo-fuzz it says so and exits 0 (CI runs it where nightly is).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(keras_json keras_zip hdf5_weights onnx npy)
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain: skipped"; exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  if [ "${FUZZ_INSTALL:-0}" = 1 ]; then cargo install cargo-fuzz --locked -q
  else echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz): skipped"; exit 0; fi
fi
F=tests/fixtures
seed() { # seed TARGET PREFIX FILES...: copies each file (with a one-byte prefix) into the corpus
  local t=$1 pre=$2; shift 2
  mkdir -p fuzz/corpus/$t
  for f in "$@"; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 1048576 ] || continue
    local out=fuzz/corpus/$t/seed-$(echo "$pre$f" | md5sum | cut -c1-10)-$(basename "$f")
    [ -e "$out" ] && continue
    if [ -n "$pre" ]; then { printf "$pre"; cat "$f"; } >"$out"; else cp "$f" "$out"; fi
  done
}
seed keras_json "" $F/models/*.json $F/tfkeras/*.json $F/layers/*.json
seed keras_zip "" $F/models/*.keras $F/layers/*.keras
seed hdf5_weights '\x00' $F/models/mlp_binary.weights.h5
seed hdf5_weights '\x01' $F/models/*.tfkeras.full.h5 $F/malformed/*.h5
seed onnx "" $F/models/*.onnx $(find $F/onnx-suite -name "*.onnx" 2>/dev/null | sort | head -300)
seed npy '\x00' $F/models/*.npy
seed npy '\x01' $(ls $F/*/*.npz 2>/dev/null | head -20)
cd fuzz
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=120 \
      -rss_limit_mb=3072 -max_len=1048576 -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 | tail -40; then
    echo "fuzz: $t FAILED (see fuzz/artifacts/$t/)"; status=1
  fi
done
exit $status
