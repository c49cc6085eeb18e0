#!/usr/bin/env bash
# Digests of what `forgec compile` writes for the bundled models, for a before/after check
# of a change that must not change generated code:
#   scripts/artifacts_digest.sh FORGEC OUTDIR   (writes OUTDIR/digests.txt)
# then `diff before/digests.txt after/digests.txt`. Each model is compiled for x86-64-v3 and
# x86-64-v4 (MLIR text, and the library with external weights), and for x86-64-v3 once more
# as a library with embedded weights and a default of 2 threads (the wrapper's other paths);
# all of it runs on any x86_64 host.
set -euo pipefail
forgec=$(realpath "$1"); out=$(realpath -m "$2")
cd "$(dirname "$0")/.."
mkdir -p "$out"
: >"$out/digests.txt"
for m in tests/fixtures/models/*.keras tests/fixtures/models/*.onnx; do
  base=$(basename "$m"); name=$(echo "${base%.*}_${base##*.}" | tr -c 'A-Za-z0-9_\n' _)
  for cpu in x86-64-v3 x86-64-v4; do
    d="$out/$name.$cpu"
    "$forgec" compile "$m" -o "$d.mlir" --name "$name" --cpu "$cpu" --emit mlir >/dev/null
    "$forgec" compile "$m" -o "$d" --name "$name" --cpu "$cpu" --weights external >/dev/null
    (cd "$out" && find "$name.$cpu" "$name.$cpu.mlir" -type f | sort | xargs sha256sum) >>"$out/digests.txt"
  done
  d="$out/$name.embedded-t2"
  "$forgec" compile "$m" -o "$d" --name "$name" --cpu x86-64-v3 --threads 2 >/dev/null
  (cd "$out" && find "$name.embedded-t2" -type f | sort | xargs sha256sum) >>"$out/digests.txt"
done
echo "$(wc -l <"$out/digests.txt") files digested in $out/digests.txt"
