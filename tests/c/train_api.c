/* A C application of the training API (forgec compile --train, library `tm`): trains for
 * EPOCHS over raw x and labels files in batches of 32 (the last one partial), printing every
 * step's loss, and checks the API's promises on the way (exit 1 with a message if one fails):
 * - predict before training equals tm_run (the model file's weights);
 * - evaluate on a batch equals the loss the next step on it reports, and the step's accuracy
 *   (TM_TRAIN_NUM_METRICS == 1, `accuracy`) is that of predict's outputs on the batch;
 * - a state saved after epoch 1 and set on a second context replays epochs 2.. to the same bits;
 * - evaluate_weighted weighs each sample's loss and divides by the batch size;
 * - a batch holding NaN returns TM_ERR_NONFINITE and leaves the state as it was;
 * - a foreign blob, batch 0 and NULL arrays are refused with their codes.
 * Writes the final state blob to OUT.
 * Usage: train_api X.bin Y.bin SAMPLES EPOCHS OUT */
#include "tm.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *why) {
    fprintf(stderr, "FAIL: %s: %s\n", what, why);
    exit(1);
}

static size_t esize(int dtype) { return dtype == 1 || dtype == 6 ? 8 : dtype == 2 || dtype == 3 ? 2 : dtype == 4 || dtype == 7 ? 1 : 4; }

static char *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) fail(path, "cannot open");
    char *b = malloc(want);
    if (fread(b, 1, want, f) != want) fail(path, "short file");
    fclose(f);
    return b;
}

static size_t per_sample(int rank, const int64_t *dims) {
    size_t n = 1;
    for (int i = 1; i < rank; i++) n *= (size_t)dims[i];
    return n;
}

int main(int argc, char **argv) {
    if (argc != 6) return fail("usage", "train_api X.bin Y.bin SAMPLES EPOCHS OUT");
    int64_t n = atoll(argv[3]), epochs = atoll(argv[4]), dims[16];
    size_t xs = per_sample(tm_input_shape(0, 1, dims), dims) * esize(tm_input_dtype(0));
    size_t ys = per_sample(tm_train_label_shape(0, 1, dims), dims) * esize(tm_train_label_dtype(0));
    size_t os = per_sample(tm_output_shape(0, 1, dims), dims);
    char *x = slurp(argv[1], (size_t)n * xs), *y = slurp(argv[2], (size_t)n * ys);
    tm_train *t = tm_train_create(), *u = tm_train_create();
    tm_ctx *ctx = tm_create();
    if (!t || !u || !ctx) fail("create", "NULL");
    size_t sz = tm_train_state_size();
    char *saved = malloc(sz), *a = malloc(sz), *b = malloc(sz);

    /* predict with the initial weights is the inference library's run. */
    float *p = malloc(32 * os * sizeof(float)), *q = malloc(32 * os * sizeof(float));
    const void *in0[1] = { x };
    void *out0[1] = { p };
    if (tm_train_predict(t, 32, in0, out0) != TM_OK) fail("predict", tm_train_last_error(t));
    if (tm_run_v(ctx, 32, in0, (void *const *)&q) != TM_OK) fail("run", tm_last_error(ctx));
    for (size_t i = 0; i < 32 * os; i++)
        if (fabsf(p[i] - q[i]) > 1e-5f * (1 + fabsf(q[i]))) fail("predict", "differs from tm_run");

    /* Refusals. */
    const void *lab0[1] = { y };
    double loss = 0;
    if (tm_train_step(t, 0, in0, lab0, &loss, NULL) != TM_ERR_BATCH) fail("batch 0", "not refused");
    if (tm_train_step(t, 32, NULL, lab0, &loss, NULL) != TM_ERR_NULL) fail("NULL inputs", "not refused");
    if (TM_TRAIN_NUM_METRICS != 1 || strcmp(tm_train_metric_name(0), "accuracy") != 0 || tm_train_metric_name(1)) fail("metrics", "not [accuracy]");
    tm_train_get_state(t, a, sz);
    a[9] ^= 1;
    if (tm_train_set_state(t, a, sz) != TM_ERR_ARG) fail("foreign blob", "not refused");
    if (tm_train_set_state(t, a, sz - 64) != TM_ERR_ARG) fail("short blob", "not refused");
    if (tm_train_set_lr(t, -1) != TM_ERR_ARG) fail("lr -1", "not refused");

    /* A batch with a NaN: ERR_NONFINITE, the state untouched. */
    char *bad = malloc(32 * xs);
    memcpy(bad, x, 32 * xs);
    float nan = NAN;
    memcpy(bad, &nan, sizeof nan);
    const void *inb[1] = { bad };
    tm_train_get_state(t, a, sz);
    if (tm_train_step(t, 32, inb, lab0, &loss, NULL) != TM_ERR_NONFINITE) fail("NaN batch", "not ERR_NONFINITE");
    tm_train_get_state(t, b, sz);
    if (memcmp(a, b, sz) != 0) fail("NaN batch", "changed the state");
    if (tm_train_steps(t) != 0) fail("NaN batch", "counted as a step");

    for (int64_t e = 0; e < epochs; e++) {
        if (e == 1) tm_train_get_state(t, saved, sz);
        for (int64_t at = 0; at < n; at += 32) {
            int64_t bs = n - at < 32 ? n - at : 32;
            const void *in[1] = { x + at * xs };
            const void *lab[1] = { y + at * ys };
            double ev = 0, em[1], sm[1];
            void *po[1] = { p };
            if (tm_train_predict(t, bs, in, po) != TM_OK) fail("predict", tm_train_last_error(t));
            int hits = 0;
            for (int64_t r = 0; r < bs; r++) {
                size_t best = 0;
                for (size_t c = 1; c < os; c++) if (p[r * os + c] > p[r * os + best]) best = c;
                int32_t want;
                memcpy(&want, y + (at + r) * ys, sizeof want);
                hits += (int32_t)best == want;
            }
            if (tm_train_evaluate(t, bs, in, lab, &ev, em) != TM_OK) fail("evaluate", tm_train_last_error(t));
            if (at == 0) {
                /* Sample weights: all 2 doubles the loss; ones on the first half and zeros on
                 * the rest give the first half's loss times half / bs (the divisor stays bs). */
                float w2[32], wh[32];
                for (int r = 0; r < 32; r++) { w2[r] = 2; wh[r] = r < 16; }
                const void *sw2[1] = { w2 }, *swh[1] = { wh };
                double e2 = 0, eh = 0, ef = 0;
                if (tm_train_evaluate_weighted(t, bs, in, lab, sw2, &e2, NULL) != TM_OK) fail("evaluate_weighted", tm_train_last_error(t));
                if (tm_train_evaluate_weighted(t, bs, in, lab, swh, &eh, NULL) != TM_OK) fail("evaluate_weighted", tm_train_last_error(t));
                if (tm_train_evaluate(t, 16, in, lab, &ef, NULL) != TM_OK) fail("evaluate", tm_train_last_error(t));
                if (fabs(e2 - 2 * ev) > 1e-6 * fabs(ev) || fabs(eh - ef / 2) > 1e-6 * fabs(ef)) fail("sample weights", "not Keras's weighted sum over the batch size");
            }
            if (tm_train_step(t, bs, in, lab, &loss, sm) != TM_OK) fail("step", tm_train_last_error(t));
            if (fabs(ev - loss) > 1e-6 * (1 + fabs(loss))) fail("evaluate", "differs from the step's loss");
            if (fabs(sm[0] - (double)hits / bs) > 1.01 / bs || fabs(em[0] - sm[0]) > 1.01 / bs) fail("accuracy", "not predict's on the batch");
            printf("%.9g\n", loss);
        }
    }
    if (tm_train_steps(t) != epochs * ((n + 31) / 32)) fail("steps", "wrong count");

    /* Resume: the state after epoch 1 on another context, epochs 2.. again. */
    if (epochs > 1) {
        if (tm_train_set_state(u, saved, sz) != TM_OK) fail("set_state", tm_train_last_error(u));
        if (tm_train_set_threads(u, 2) != TM_OK) fail("set_threads", tm_train_last_error(u));
        for (int64_t e = 1; e < epochs; e++)
            for (int64_t at = 0; at < n; at += 32) {
                int64_t bs = n - at < 32 ? n - at : 32;
                const void *in[1] = { x + at * xs };
                const void *lab[1] = { y + at * ys };
                if (tm_train_step(u, bs, in, lab, NULL, NULL) != TM_OK) fail("resumed step", tm_train_last_error(u));
            }
        tm_train_get_state(t, a, sz);
        tm_train_get_state(u, b, sz);
        if (memcmp(a, b, sz) != 0) fail("resume", "the resumed run (on 2 threads) differs from the uninterrupted one");
    }
    tm_train_get_state(t, a, sz);
    FILE *f = fopen(argv[5], "wb");
    if (!f || fwrite(a, 1, sz, f) != sz) fail(argv[5], "cannot write");
    fclose(f);
    tm_train_destroy(t);
    tm_train_destroy(u);
    tm_destroy(ctx);
    free(saved); free(a); free(b); free(p); free(q); free(bad); free(x); free(y);
    return 0;
}
