// The training API of NAME.h (`forgec compile --train`): a template filled by
// capi::train::wrapper with the same rules as wrapper.c (`NAME`, `UPNAME`, `@key@`, `//@`
// sections, `//` notes left out). It drives three models compiled into the same library, each
// with its own wrapper: NAME_forgec_step (forward, loss, gradients, update: the state in, the
// next state out), NAME_forgec_eval (the loss) and NAME_forgec_predict (the outputs), whose
// weights are inputs. A training context holds two state blobs and swaps them after a step
// whose results are all finite, so a failed step leaves the state as it was, and no weight is
// ever copied.

//@ train
#define _POSIX_C_SOURCE 200112L
#include "NAME.h"
#include "NAME_forgec_step.h"
#include "NAME_forgec_eval.h"
#include "NAME_forgec_predict.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The initial state: the model file's weights, zero slots, step 0 (capi::train::state_blob). */
extern const char NAME_forgec_train_init[] __attribute__((visibility("hidden")));

typedef struct { int64_t offset, bytes; int dtype, rank; int64_t dims[8]; const char *name; } NAME_tensor_info;
static const NAME_tensor_info NAME_state_info[UPNAME_TRAIN_NUM_STATE] = {
@state_table@
};

struct NAME_train {
    char error[256];
    NAME_forgec_step_ctx *step;
    NAME_forgec_eval_ctx *eval;
    NAME_forgec_predict_ctx *predict;
    char *state[2];
    int cur, busy;
    @scalar@ *ones; /* unit sample weights for the calls that give none, grown to the largest batch */
    int64_t ones_n;
    double gradient_norm; /* of the last good step; NaN before one, or when the library computes none */
};

/* The header of a state blob (see NAME.h). */
static int64_t NAME_get_i64(const char *b, int at) { int64_t v; memcpy(&v, b + at, 8); return v; }
static double NAME_get_f64(const char *b, int at) { double v; memcpy(&v, b + at, 8); return v; }
static void NAME_put_i64(char *b, int at, int64_t v) { memcpy(b + at, &v, 8); }
static void NAME_put_f64(char *b, int at, double v) { memcpy(b + at, &v, 8); }

void NAME_train_destroy(NAME_train *t) {
    if (!t) return;
    NAME_forgec_step_destroy(t->step);
    NAME_forgec_eval_destroy(t->eval);
    NAME_forgec_predict_destroy(t->predict);
    free(t->state[0]);
    free(t->state[1]);
    free(t->ones);
    free(t);
}

NAME_train *NAME_train_create(void) {
    NAME_train *t = (NAME_train *)calloc(1, sizeof *t);
    if (!t) return NULL;
    t->step = NAME_forgec_step_create();
    t->eval = NAME_forgec_eval_create();
    t->predict = NAME_forgec_predict_create();
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, UPNAME_TRAIN_STATE_BYTES) != 0) p = NULL;
        t->state[i] = (char *)p;
    }
    if (!t->step || !t->eval || !t->predict || !t->state[0] || !t->state[1]) { NAME_train_destroy(t); return NULL; }
    /* Both buffers whole, the padding between tensors included: a step writes only the
     * tensors and the header of the buffer it fills, so get_state's bytes never hold memory
     * left uninitialised (a checkpoint of the same run is the same bytes). */
    memcpy(t->state[0], NAME_forgec_train_init, UPNAME_TRAIN_STATE_BYTES);
    memcpy(t->state[1], NAME_forgec_train_init, UPNAME_TRAIN_STATE_BYTES);
    t->gradient_norm = NAN;
    return t;
}

const char *NAME_train_last_error(const NAME_train *t) { return t ? t->error : "the training context is NULL"; }

/* One call at a time per context: a second thread's call is refused with UPNAME_ERR_BUSY. */
static int NAME_enter(NAME_train *t) {
    if (!t) return UPNAME_ERR_NULL;
    if (__atomic_exchange_n(&t->busy, 1, __ATOMIC_ACQUIRE)) return UPNAME_ERR_BUSY;
    t->error[0] = 0;
    return UPNAME_OK;
}
static int NAME_leave(NAME_train *t, int rc) { __atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE); return rc; }

int NAME_train_set_threads(NAME_train *t, int threads) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if (threads < 1 || threads > UPNAME_MAX_THREADS) { snprintf(t->error, sizeof t->error, "%d threads: use 1..%d", threads, UPNAME_MAX_THREADS); return NAME_leave(t, UPNAME_ERR_ARG); }
    if (NAME_forgec_step_set_threads(t->step, threads) != UPNAME_OK || NAME_forgec_eval_set_threads(t->eval, threads) != UPNAME_OK || NAME_forgec_predict_set_threads(t->predict, threads) != UPNAME_OK) {
        snprintf(t->error, sizeof t->error, "could not start %d threads", threads);
        return NAME_leave(t, UPNAME_ERR_ARG);
    }
    return NAME_leave(t, UPNAME_OK);
}
int NAME_train_threads(const NAME_train *t) { return t ? NAME_forgec_step_threads(t->step) : 0; }

double NAME_train_gradient_norm(const NAME_train *t) { return t ? t->gradient_norm : NAN; }
int64_t NAME_train_steps(const NAME_train *t) { return t ? NAME_get_i64(t->state[t->cur], 16) : -1; }
double NAME_train_lr(const NAME_train *t) { return t ? NAME_get_f64(t->state[t->cur], 24) : 0.0; }
int NAME_train_set_lr(NAME_train *t, double lr) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if (!(lr >= 0.0 && lr < 1e30)) { snprintf(t->error, sizeof t->error, "learning rate %g: use a finite one of at least 0 (0 leaves the weights as they are, as a schedule's warmup may start)", lr); return NAME_leave(t, UPNAME_ERR_ARG); }
    NAME_put_f64(t->state[t->cur], 24, lr);
    return NAME_leave(t, UPNAME_OK);
}

/* Whether any of the n bit patterns at p is an Inf or a NaN: its exponent is all ones exactly
 * when adding the lowest exponent bit to the exponent carries into the sign bit. In blocks of
 * 64, so that the loop vectorises at -O2 (this check reads the whole state every step). */
static int NAME_nonfinite32(const uint32_t *p, int64_t n) {
    uint32_t acc = 0;
    int64_t k = 0;
    for (; k + 64 <= n; k += 64)
        for (int j = 0; j < 64; j++) acc |= (p[k + j] & 0x7f800000u) + 0x00800000u;
    for (; k < n; k++) acc |= (p[k] & 0x7f800000u) + 0x00800000u;
    return (int)(acc >> 31);
}
static int NAME_nonfinite64(const uint64_t *p, int64_t n) {
    uint64_t acc = 0;
    int64_t k = 0;
    for (; k + 32 <= n; k += 32)
        for (int j = 0; j < 32; j++) acc |= (p[k + j] & 0x7ff0000000000000ull) + 0x0010000000000000ull;
    for (; k < n; k++) acc |= (p[k] & 0x7ff0000000000000ull) + 0x0010000000000000ull;
    return (int)(acc >> 63);
}

/* Whether every element of the state tensors in `s` is finite (checked on the bits). */
static int NAME_all_finite(const char *s, int *bad) {
    for (int i = 0; i < UPNAME_TRAIN_NUM_STATE; i++) {
        const NAME_tensor_info *ti = &NAME_state_info[i];
        const void *p = s + ti->offset;
        int any = ti->dtype == 1 ? NAME_nonfinite64((const uint64_t *)p, ti->bytes / 8)
                                 : NAME_nonfinite32((const uint32_t *)p, ti->bytes / 4);
        if (any) { *bad = i; return 0; }
    }
    return 1;
}

/* Dropout's key for a step: SplitMix64 of the seed advanced by the step
 * (forgec_ir::ops::norm::dropout_key). */
static uint64_t NAME_dropout_key(uint64_t seed, uint64_t step) {
    uint64_t z = seed + step * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t NAME_train_seed(const NAME_train *t) { return t ? (uint64_t)NAME_get_i64(t->state[t->cur], 32) : 0; }
int NAME_train_set_seed(NAME_train *t, uint64_t seed) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    NAME_put_i64(t->state[t->cur], 32, (int64_t)seed);
    return NAME_leave(t, UPNAME_OK);
}

static int NAME_sub_error(NAME_train *t, const char *what, const char *err, int rc) {
    snprintf(t->error, sizeof t->error, "%s: %s", what, err);
    return rc;
}

static int NAME_check_data(NAME_train *t, int64_t batch, const void *const *inputs, const void *const *labels, int need_labels) {
    if (!inputs || (need_labels && !labels)) { snprintf(t->error, sizeof t->error, "the input or labels array is NULL"); return UPNAME_ERR_NULL; }
    if (batch < 1 || batch > UPNAME_MAX_BATCH) { snprintf(t->error, sizeof t->error, "batch size %lld: a training call needs 1..%lld samples", (long long)batch, (long long)UPNAME_MAX_BATCH); return UPNAME_ERR_BATCH; }
    return UPNAME_OK;
}

static const char *const NAME_metric_names[UPNAME_TRAIN_NUM_METRICS + 1] = { @metric_names@ };
const char *NAME_train_metric_name(int i) { return i < 0 || i >= UPNAME_TRAIN_NUM_METRICS ? NULL : NAME_metric_names[i]; }

/* Each output's sample weights: the caller's, else ones (allocated when a larger batch first
 * comes, so a run of one batch size allocates once). */
static int NAME_sample_weights(NAME_train *t, int64_t batch, const void *const *given, const void **sw) {
    int need = 0;
    for (int k = 0; k < UPNAME_TRAIN_NUM_LABELS; k++) need |= !(given && given[k]);
    if (need && t->ones_n < batch) {
        @scalar@ *p = (@scalar@ *)malloc((size_t)batch * sizeof *p);
        if (!p) { snprintf(t->error, sizeof t->error, "out of memory for %lld sample weights", (long long)batch); return UPNAME_ERR_MEMORY; }
        for (int64_t i = 0; i < batch; i++) p[i] = 1;
        free(t->ones);
        t->ones = p;
        t->ones_n = batch;
    }
    for (int k = 0; k < UPNAME_TRAIN_NUM_LABELS; k++) sw[k] = given && given[k] ? given[k] : (const void *)t->ones;
    return UPNAME_OK;
}

int NAME_train_step(NAME_train *t, int64_t batch, const void *const *inputs, const void *const *labels, double *loss, double *metrics) {
    return NAME_train_step_weighted(t, batch, inputs, labels, NULL, loss, metrics);
}

int NAME_train_step_weighted(NAME_train *t, int64_t batch, const void *const *inputs, const void *const *labels, const void *const *sample_weights, double *loss, double *metrics) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if ((rc = NAME_check_data(t, batch, inputs, labels, 1)) != UPNAME_OK) return NAME_leave(t, rc);
    const void *sw[UPNAME_TRAIN_NUM_LABELS + 1];
    if ((rc = NAME_sample_weights(t, batch, sample_weights, sw)) != UPNAME_OK) return NAME_leave(t, rc);
    (void)sw;
    const char *cur = t->state[t->cur];
    char *next = t->state[1 - t->cur];
    int64_t steps = NAME_get_i64(cur, 16);
    @scalar@ lr = (@scalar@)NAME_get_f64(cur, 24), step = (@scalar@)(steps + 1), value = 0;
    int64_t key = (int64_t)NAME_dropout_key((uint64_t)NAME_get_i64(cur, 32), (uint64_t)(steps + 1));
    @scalar@ mvals[UPNAME_TRAIN_NUM_METRICS + 1] = { 0 }, gnorm = 0;
    (void)step; (void)key; (void)gnorm;
    const void *ins[UPNAME_FORGEC_STEP_NUM_INPUTS];
    void *outs[UPNAME_FORGEC_STEP_NUM_OUTPUTS];
@step_args@
    rc = NAME_forgec_step_run_v(t->step, batch, ins, outs);
    if (rc != UPNAME_OK) return NAME_leave(t, NAME_sub_error(t, "the training step", NAME_forgec_step_last_error(t->step), rc));
    int bad = -1;
    if (!(value == value && value - value == 0)) {
        snprintf(t->error, sizeof t->error, "step %lld: the loss is %g: the state is left as it was before this step (lower the learning rate, or look for NaN or huge values in this batch)", (long long)(steps + 1), (double)value);
        return NAME_leave(t, UPNAME_ERR_NONFINITE);
    }
    if (!NAME_all_finite(next, &bad)) {
        snprintf(t->error, sizeof t->error, "step %lld: the update of `%s` is not finite (the gradients overflowed): the state is left as it was before this step (lower the learning rate, or clip the gradients)", (long long)(steps + 1), NAME_state_info[bad].name);
        return NAME_leave(t, UPNAME_ERR_NONFINITE);
    }
    memcpy(next, cur, UPNAME_TRAIN_STATE_HEADER);
    NAME_put_i64(next, 16, steps + 1);
    t->cur = 1 - t->cur;
    t->gradient_norm = @has_norm@ ? (double)gnorm : NAN;
    if (loss) *loss = (double)value;
    if (metrics) for (int k = 0; k < UPNAME_TRAIN_NUM_METRICS; k++) metrics[k] = (double)mvals[k];
    return NAME_leave(t, UPNAME_OK);
}

int NAME_train_evaluate(NAME_train *t, int64_t batch, const void *const *inputs, const void *const *labels, double *loss, double *metrics) {
    return NAME_train_evaluate_weighted(t, batch, inputs, labels, NULL, loss, metrics);
}

int NAME_train_evaluate_weighted(NAME_train *t, int64_t batch, const void *const *inputs, const void *const *labels, const void *const *sample_weights, double *loss, double *metrics) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if ((rc = NAME_check_data(t, batch, inputs, labels, 1)) != UPNAME_OK) return NAME_leave(t, rc);
    const void *sw[UPNAME_TRAIN_NUM_LABELS + 1];
    if ((rc = NAME_sample_weights(t, batch, sample_weights, sw)) != UPNAME_OK) return NAME_leave(t, rc);
    (void)sw;
    if (!loss) { snprintf(t->error, sizeof t->error, "the loss pointer is NULL"); return NAME_leave(t, UPNAME_ERR_NULL); }
    const char *cur = t->state[t->cur];
    @scalar@ value = 0, mvals[UPNAME_TRAIN_NUM_METRICS + 1] = { 0 };
    const void *ins[UPNAME_FORGEC_EVAL_NUM_INPUTS];
    void *outs[UPNAME_FORGEC_EVAL_NUM_OUTPUTS];
@eval_args@
    rc = NAME_forgec_eval_run_v(t->eval, batch, ins, outs);
    if (rc != UPNAME_OK) return NAME_leave(t, NAME_sub_error(t, "evaluation", NAME_forgec_eval_last_error(t->eval), rc));
    *loss = (double)value;
    if (metrics) for (int k = 0; k < UPNAME_TRAIN_NUM_METRICS; k++) metrics[k] = (double)mvals[k];
    return NAME_leave(t, UPNAME_OK);
}

int NAME_train_predict(NAME_train *t, int64_t batch, const void *const *inputs, void *const *outputs) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if ((rc = NAME_check_data(t, batch, inputs, NULL, 0)) != UPNAME_OK) return NAME_leave(t, rc);
    if (!outputs) { snprintf(t->error, sizeof t->error, "the output array is NULL"); return NAME_leave(t, UPNAME_ERR_NULL); }
    const char *cur = t->state[t->cur];
    const void *ins[UPNAME_FORGEC_PREDICT_NUM_INPUTS];
@predict_args@
    rc = NAME_forgec_predict_run_v(t->predict, batch, ins, outputs);
    if (rc != UPNAME_OK) return NAME_leave(t, NAME_sub_error(t, "prediction", NAME_forgec_predict_last_error(t->predict), rc));
    return NAME_leave(t, UPNAME_OK);
}

size_t NAME_train_state_size(void) { return UPNAME_TRAIN_STATE_BYTES; }

int NAME_train_get_state(NAME_train *t, void *buf, size_t size) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if (!buf) { snprintf(t->error, sizeof t->error, "the buffer is NULL"); return NAME_leave(t, UPNAME_ERR_NULL); }
    if (size < UPNAME_TRAIN_STATE_BYTES) { snprintf(t->error, sizeof t->error, "the buffer has %llu bytes; the state needs %llu", (unsigned long long)size, (unsigned long long)UPNAME_TRAIN_STATE_BYTES); return NAME_leave(t, UPNAME_ERR_ARG); }
    memcpy(buf, t->state[t->cur], UPNAME_TRAIN_STATE_BYTES);
    return NAME_leave(t, UPNAME_OK);
}

int NAME_train_set_state(NAME_train *t, const void *buf, size_t size) {
    int rc = NAME_enter(t);
    if (rc != UPNAME_OK) return rc;
    if (!buf) { snprintf(t->error, sizeof t->error, "the buffer is NULL"); return NAME_leave(t, UPNAME_ERR_NULL); }
    const char *b = (const char *)buf;
    if (size != UPNAME_TRAIN_STATE_BYTES || memcmp(b, NAME_forgec_train_init, 16) != 0 || NAME_get_i64(b, 40) != UPNAME_TRAIN_STATE_BYTES) {
        snprintf(t->error, sizeof t->error, "not a state of this model (%llu bytes; this model's state has %llu and starts with its own header): use a blob from NAME_train_get_state of this library", (unsigned long long)size, (unsigned long long)UPNAME_TRAIN_STATE_BYTES);
        return NAME_leave(t, UPNAME_ERR_ARG);
    }
    double lr = NAME_get_f64(b, 24);
    if (NAME_get_i64(b, 16) < 0 || !(lr >= 0.0 && lr < 1e30)) { snprintf(t->error, sizeof t->error, "the state's step count or learning rate is out of range"); return NAME_leave(t, UPNAME_ERR_ARG); }
    memcpy(t->state[0], b, UPNAME_TRAIN_STATE_BYTES);
    memcpy(t->state[1], b, UPNAME_TRAIN_STATE_BYTES);
    return NAME_leave(t, UPNAME_OK);
}

int NAME_train_state_tensor(int i, const char **name, int64_t *offset, int64_t *dims) {
    if (i < 0 || i >= UPNAME_TRAIN_NUM_STATE) return -1;
    const NAME_tensor_info *ti = &NAME_state_info[i];
    if (name) *name = ti->name;
    if (offset) *offset = ti->offset;
    if (dims) for (int k = 0; k < ti->rank; k++) dims[k] = ti->dims[k];
    return ti->rank;
}
int NAME_train_state_dtype(int i) { return i < 0 || i >= UPNAME_TRAIN_NUM_STATE ? -1 : NAME_state_info[i].dtype; }

int NAME_train_label_shape(int i, int64_t batch, int64_t *dims) { return i < 0 || i >= UPNAME_TRAIN_NUM_LABELS ? -1 : NAME_forgec_eval_input_shape(UPNAME_NUM_INPUTS + i, batch, dims); }
int NAME_train_label_dtype(int i) { return i < 0 || i >= UPNAME_TRAIN_NUM_LABELS ? -1 : NAME_forgec_eval_input_dtype(UPNAME_NUM_INPUTS + i); }
