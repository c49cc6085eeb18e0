#!/usr/bin/env bash
# A/B of two forgec builds on one model: both libraries linked into one C program that
# alternates their calls (ABBA), so a busy machine slows both alike. Prints medians, bests and
# the median of the per-call time ratios B/A, and the largest output difference.
# Usage: scripts/ab.sh FORGEC_A FORGEC_B MODEL BATCH THREADS [RUNS]   (one-input models)
set -euo pipefail
[ $# -ge 5 ] || { sed -n 2,5p "$0"; exit 2; }
FA=$1 FB=$2 MODEL=$3 BATCH=$4 THREADS=$5 RUNS=${6:-40}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
"$FA" compile "$MODEL" --cpu native --name ma -o "$D/a" >/dev/null
"$FB" compile "$MODEL" --cpu native --name mb -o "$D/b" >/dev/null
read -r IN OUT < <(python3 -c "
import json, math, sys
j = json.load(open(sys.argv[1]))
assert len(j['inputs']) == 1, 'one-input models only'
p = lambda s: math.prod(d for d in s if d != 'batch')
print(p(j['inputs'][0]['shape']), p(j['outputs'][0]['shape']))" "$D/a/ma.json")
cat > "$D/ab.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ma.h"
#include "mb.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    long b = atol(argv[1]), in = atol(argv[4]), out = atol(argv[5]); int th = atoi(argv[2]), R = atoi(argv[3]);
    ma_ctx *c1 = ma_create(); mb_ctx *c2 = mb_create();
    if (!c1 || !c2 || ma_set_threads(c1, th) || mb_set_threads(c2, th)) return 3;
    float *x = malloc(4L * b * in), *y1 = malloc(4L * b * out), *y2 = malloc(4L * b * out);
    for (long i = 0; i < b * in; i++) x[i] = (i % 17) / 17.0f - 0.4f;
    double *t1 = malloc(8 * R), *t2 = malloc(8 * R), *q = malloc(8 * R), d = 0, t;
    for (int i = 0; i < 3; i++) { ma_run(c1, b, (void *)x, y1); mb_run(c2, b, (void *)x, y2); }
    for (int r = 0; r < R; r++) {
        if (r & 1) { t = now(); mb_run(c2, b, (void *)x, y2); t2[r] = now() - t; t = now(); ma_run(c1, b, (void *)x, y1); t1[r] = now() - t; }
        else { t = now(); ma_run(c1, b, (void *)x, y1); t1[r] = now() - t; t = now(); mb_run(c2, b, (void *)x, y2); t2[r] = now() - t; }
        q[r] = t2[r] / t1[r];
    }
    for (long i = 0; i < b * out; i++) { double e = y1[i] - y2[i]; if (e < 0) e = -e; if (e > d) d = e; }
    qsort(t1, R, 8, cmp); qsort(t2, R, 8, cmp); qsort(q, R, 8, cmp);
    printf("A median %.3f ms best %.3f | B median %.3f best %.3f | B/A per call: median %.3f | max |A-B| %g\n",
           t1[R / 2] * 1e3, t1[0] * 1e3, t2[R / 2] * 1e3, t2[0] * 1e3, q[R / 2], d);
    return 0;
}
C
cc -O2 -o "$D/ab" "$D/ab.c" -I"$D/a" -I"$D/b" "$D/a/libma.a" "$D/b/libmb.a" -lm -lpthread
"$D/ab" "$BATCH" "$THREADS" "$RUNS" "$IN" "$OUT"
