/* The machine's f32 multiply-add ceiling: T threads each run independent vector FMA chains
 * on registers (no memory traffic), the widest vectors the compiler targets (-march=native).
 * Prints the median GFLOP/s of 15 runs of ~0.1 s. scripts/bench.sh puts it beside the matmul's.
 * Usage: fma_peak T */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define WIDTH 16
#else
#define WIDTH 8
#endif
#define CHAINS 12 /* enough independent chains to cover the FMA latency on two pipes */
typedef float vec __attribute__((vector_size(WIDTH * 4)));

static long iters = 20000000;
static volatile float sink;

static void *work(void *arg) {
    (void)arg;
    vec acc[CHAINS], m, a;
    for (int i = 0; i < WIDTH; i++) {
        m[i] = 0.999999f;
        a[i] = 1e-7f;
    }
    for (int j = 0; j < CHAINS; j++)
        for (int i = 0; i < WIDTH; i++) acc[j][i] = (float)j;
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int j = 0; j < CHAINS; j++) acc[j] = acc[j] * m + a;
    }
    float s = 0;
    for (int j = 0; j < CHAINS; j++) s += acc[j][0];
    sink = s;
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "fma_peak: threads must be 1..64\n");
        return 2;
    }
    pthread_t tid[64];
    double gf[15];
    for (int r = 0; r < 15; r++) {
        double t = now();
        for (int i = 1; i < threads; i++) pthread_create(&tid[i], NULL, work, NULL);
        work(NULL);
        for (int i = 1; i < threads; i++) pthread_join(tid[i], NULL);
        t = now() - t;
        gf[r] = 2.0 * WIDTH * CHAINS * (double)iters * threads / t / 1e9;
    }
    qsort(gf, 15, sizeof gf[0], cmp);
    printf("%.1f\n", gf[7]);
    return 0;
}
