/* Counts the heap allocations of a training library's steps (library `ta`, from forgec compile
 * --train): malloc, calloc, realloc, aligned_alloc and posix_memalign are interposed here and
 * counted while COUNTED steps run, after WARM steps at the same batch (the first call sizes the
 * context's scratch buffers). Prints, for each thread count asked for, "allocations: N" and the
 * FNV-1a hash of the whole state blob after the steps (weights, slots, step count), which the
 * same steps must give bitwise on any number of threads.
 * Usage: train_allocs X.bin Y.bin BATCH WARM COUNTED THREADS... */
#define _GNU_SOURCE
#include "ta.h"
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static long counting, count;
static void counted(void) {
    if (__atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
}
void *malloc(size_t n) { counted(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { counted(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { counted(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { counted(); return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n) {
    counted();
    *p = __libc_memalign(a, n);
    return *p ? 0 : 12;
}

static size_t esize(int dtype) { return dtype == 1 || dtype == 6 ? 8 : dtype == 2 || dtype == 3 ? 2 : dtype == 4 || dtype == 7 ? 1 : 4; }

static char *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    char *b = __libc_malloc(want);
    if (!f || !b || fread(b, 1, want, f) != want) { fprintf(stderr, "FAIL: cannot read %s\n", path); exit(1); }
    fclose(f);
    return b;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: train_allocs X.bin Y.bin BATCH WARM COUNTED THREADS...\n"); return 2; }
    int64_t batch = atoll(argv[3]), dims[16];
    int warm = atoi(argv[4]), steps = atoi(argv[5]);
    size_t xs = 1, ys = 1;
    int r = ta_input_shape(0, batch, dims);
    for (int i = 0; i < r; i++) xs *= (size_t)dims[i];
    r = ta_train_label_shape(0, batch, dims);
    for (int i = 0; i < r; i++) ys *= (size_t)dims[i];
    const void *in[1] = { slurp(argv[1], xs * esize(ta_input_dtype(0))) };
    const void *lab[1] = { slurp(argv[2], ys * esize(ta_train_label_dtype(0))) };
    for (int a = 6; a < argc; a++) {
        int threads = atoi(argv[a]);
        ta_train *t = ta_train_create();
        if (!t || ta_train_set_threads(t, threads) != TA_OK) { fprintf(stderr, "FAIL: create\n"); return 1; }
        double loss = 0;
        for (int i = 0; i < warm + steps; i++) {
            if (i == warm) __atomic_store_n(&counting, 1, __ATOMIC_RELAXED);
            if (ta_train_step(t, batch, in, lab, &loss, NULL) != TA_OK) { fprintf(stderr, "FAIL: step: %s\n", ta_train_last_error(t)); return 1; }
        }
        __atomic_store_n(&counting, 0, __ATOMIC_RELAXED);
        size_t sz = ta_train_state_size();
        unsigned char *blob = __libc_malloc(sz);
        if (!blob || ta_train_get_state(t, blob, sz) != TA_OK) { fprintf(stderr, "FAIL: get_state\n"); return 1; }
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < sz; i++) h = (h ^ blob[i]) * 1099511628211ULL;
        free(blob);
        printf("threads %d: allocations: %ld in %d steps (loss %.17g, state %016llx)\n", threads, count, steps, loss, (unsigned long long)h);
        count = 0;
        ta_train_destroy(t);
    }
    return 0;
}
