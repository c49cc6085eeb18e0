/* Runs a model compiled by forgec and prints its outputs.
 *
 *   forgec compile tests/fixtures/models/mlp_binary.keras -o build --name mlp_binary
 *   cc -std=c99 -Ibuild examples/c/main.c -Lbuild -l:libmlp_binary.a -lm -o mlp_binary_demo
 *   ./mlp_binary_demo input.f32 16     # raw little-endian float32 input, batch 16
 */
#include <stdio.h>
#include <stdlib.h>
#include "mlp_binary.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT.f32 BATCH\n", argv[0]);
        return 2;
    }
    int64_t batch = atoll(argv[2]);
    int64_t in_dims[8], out_dims[8];
    int in_rank = mlp_binary_input_shape(0, batch, in_dims);
    int out_rank = mlp_binary_output_shape(0, batch, out_dims);
    size_t n_in = 1, n_out = 1;
    for (int i = 0; i < in_rank; i++) n_in *= (size_t)in_dims[i];
    for (int i = 0; i < out_rank; i++) n_out *= (size_t)out_dims[i];
    float *in = malloc(n_in * sizeof *in), *out = malloc(n_out * sizeof *out);
    FILE *f = fopen(argv[1], "rb");
    if (!f || !in || !out || fread(in, sizeof *in, n_in, f) != n_in) {
        fprintf(stderr, "cannot read %zu floats from %s\n", n_in, argv[1]);
        return 1;
    }
    fclose(f);
    mlp_binary_ctx *ctx = mlp_binary_create();
    int rc = mlp_binary_run(ctx, batch, in, out);
    if (rc != MLP_BINARY_OK) {
        fprintf(stderr, "mlp_binary_run failed (%d): %s\n", rc, mlp_binary_last_error(ctx));
        return 1;
    }
    for (size_t i = 0; i < n_out; i++) printf("%.9g\n", out[i]);
    mlp_binary_destroy(ctx);
    free(in);
    free(out);
    return 0;
}
