/* A stand-in for the CUDA driver (libcuda.so.1) with the driver API calls `forgec devices`
 * and `--device cuda` make, for tests on machines without a GPU. FAKE_CUDA_INIT sets what
 * cuInit returns (100: no device), FAKE_CUDA_DEVICES how many devices there are (2). */
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

static int env_int(const char *k, int d) {
    const char *v = getenv(k);
    return v ? atoi(v) : d;
}

int cuInit(unsigned flags) { (void)flags; return env_int("FAKE_CUDA_INIT", 0); }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *n) { *n = env_int("FAKE_CUDA_DEVICES", 2); return 0; }
int cuDeviceGet(int *d, int ordinal) {
    if (ordinal < 0 || ordinal >= env_int("FAKE_CUDA_DEVICES", 2)) return 101; /* invalid device */
    *d = ordinal;
    return 0;
}
int cuDeviceGetName(char *name, int len, int d) {
    const char *n = d == 0 ? "Fake H100 80GB HBM3" : "Fake A100-SXM4-40GB";
    strncpy(name, n, (size_t)len);
    name[len - 1] = 0;
    return 0;
}
int cuDeviceTotalMem_v2(size_t *bytes, int d) {
    *bytes = (size_t)(d == 0 ? 80 : 40) << 30;
    return 0;
}
int cuDeviceGetAttribute(int *v, int attr, int d) {
    switch (attr) {
    case 16: *v = d == 0 ? 132 : 108; return 0; /* multiprocessors */
    case 75: *v = d == 0 ? 9 : 8; return 0;     /* compute capability, major */
    case 76: *v = 0; return 0;                  /* minor */
    default: return 1;                          /* invalid value */
    }
}
