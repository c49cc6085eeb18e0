// The C wrapper of a compiled model: the C API of NAME.h around the kernels' entry point.
// A template, filled by capi::wrapper (read with include_str!), never compiled as it stands:
// - `NAME` becomes the model's name and `UPNAME` its upper-case form (in one pass);
// - `@key@` becomes a value capi::wrapper computes for the model; a line that is only
//   `@key@` becomes that value's lines (which may be none);
// - `//@ section` starts a section: capi::wrapper emits sections in this order, skipping the
//   ones a model does not need, and writes the per-model lists between them;
// - lines starting with `//` (these notes) are left out; the C itself uses /* */ comments.
// The tests compile the filled wrapper of several models with -Wall -Wextra -Werror
// (compile::the_c_wrapper_compiles_cleanly).

//@ external_includes
// With --weights external: dladdr (the library's own path) and mmap.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
//@ includes
#include "NAME.h"
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>

//@ entry
// The kernels' entry (after the memref descriptor typedefs, one per rank used).

extern void _mlir_ciface_@entry@(@args@);

//@ embedded_weights
// Weights in the library: the blob the assembler puts there (capi::blob_asm).
extern const char NAME_forgec_weights[] __attribute__((visibility("hidden")));
static const char *const NAME_weights = NAME_forgec_weights;

//@ external_weights
// Weights in @wfile@ (--weights external): @total@ is the file's size, @hash@ the 16 bytes of
// its header that name this build. @wfile@ and @wenv@ are the library's (a portable library's
// levels share its file); @wmap@ is a constructor, or, in a level of a portable library, a
// function its dispatcher calls for the level it picks.
static const char *NAME_weights;
static char NAME_weights_error[600] = "the weights file was not mapped";
static const unsigned char NAME_weights_hash[16] = { @hash@ };
static uint64_t NAME_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
/* capi::checksum64 */
static uint64_t NAME_sum(const unsigned char *d, size_t n) {
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h[4] = { 1, 2, 3, 4 }, w;
    unsigned char tail[32];
    for (size_t i = 0; i < n; i += 32) {
        const unsigned char *b = d + i;
        if (n - i < 32) { memset(tail, 0, 32); memcpy(tail, b, n - i); b = tail; }
        for (int j = 0; j < 4; j++) { memcpy(&w, b + 8 * j, 8); h[j] = NAME_rotl(h[j] ^ w, 29) * k; }
    }
    return h[0] ^ NAME_rotl(h[1], 17) ^ NAME_rotl(h[2], 31) ^ NAME_rotl(h[3], 47) ^ (uint64_t)n;
}
/* Maps @wfile@ when the library is loaded: from $@wenv@ if set, else from the
 * directory of the file this code was loaded from (the shared library, or the program that
 * linked the static one). The file must be this build's: its size and hash are checked. */
@wmap@ NAME_map_weights(void) {
    char path[4096];
    const char *env = getenv("@wenv@");
    if (env) snprintf(path, sizeof path, "%s", env);
    else {
        Dl_info info;
        if (!dladdr((void *)&NAME_weights_hash, &info) || !info.dli_fname) {
            snprintf(NAME_weights_error, sizeof NAME_weights_error, "cannot find where the library was loaded from: set @wenv@ to the path of @wfile@");
            return;
        }
        snprintf(path, sizeof path, "%s", info.dli_fname);
        char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path + 1) : 0;
        snprintf(path + dir, sizeof path - dir, "@wfile@");
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(NAME_weights_error, sizeof NAME_weights_error, "cannot open the weights file %s: put @wfile@ beside the library or set @wenv@", path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size != @total@) {
        snprintf(NAME_weights_error, sizeof NAME_weights_error, "%s has %lld bytes, not the @total@ of this build's weights", path, (long long)st.st_size);
        close(fd);
        return;
    }
    void *p = mmap(NULL, @total@, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(NAME_weights_error, sizeof NAME_weights_error, "cannot map %s", path);
        return;
    }
    if (memcmp(p, "FORGECW1", 8) != 0 || memcmp((const char *)p + 16, NAME_weights_hash, 16) != 0) {
        munmap(p, @total@);
        snprintf(NAME_weights_error, sizeof NAME_weights_error, "%s holds other weights (another model or build of it)", path);
        return;
    }
    /* The data must be what was written: a flipped byte would give wrong outputs silently. */
    uint64_t want; memcpy(&want, (const char *)p + 48, 8);
    if (NAME_sum((const unsigned char *)p + 64, @total@ - 64) != want) {
        munmap(p, @total@);
        snprintf(NAME_weights_error, sizeof NAME_weights_error, "%s is damaged: its checksum does not match its data (copy the file again)", path);
        return;
    }
    NAME_weights = (const char *)p;
}
//@ runtime
// memrefCopy, scratch memory, contexts. MLIR lowers copies between strided views to a call of
// `memrefCopy` (from its runner library): the artifact carries its own, renamed
// `NAME_forgec_memrefCopy` by `llvm::compile`, so that it never meets another library's. Scratch
// memory: the kernels allocate and free their intermediate buffers through NAME_forgec_alloc/free.
// A context keeps the buffers freed during a call for the next call (the same sizes come back
// every call at a given batch size), so that a steady stream of calls neither mallocs nor page-
// faults. The context of the running call is found through a thread-local pointer: two threads,
// each with its own context, never share a buffer.
#include <string.h>
typedef struct { int64_t rank; void *descriptor; } forgec_unranked;
typedef struct { char *allocated; char *aligned; int64_t offset; int64_t rest[]; } forgec_desc;
void NAME_forgec_memrefCopy(int64_t elem, forgec_unranked *src, forgec_unranked *dst) {
    int64_t rank = src->rank;
    forgec_desc *s = (forgec_desc *)src->descriptor, *d = (forgec_desc *)dst->descriptor;
    const int64_t *sizes = s->rest, *ss = s->rest + rank, *ds = d->rest + rank;
    int64_t n = 1, idx[16] = {0};
    if (rank > 16) return;
    if (rank == 0) { memcpy(d->aligned + d->offset * elem, s->aligned + s->offset * elem, (size_t)elem); return; }
    for (int64_t i = 0; i < rank; i++) n *= sizes[i];
    if (n == 0) return;
    /* The trailing dims that both sides hold contiguously are copied in one memcpy. */
    int64_t last = rank, run = 1;
    while (last > 0 && ss[last - 1] == run && ds[last - 1] == run) run *= sizes[--last];
    for (int64_t k = 0; k < n; k += run) {
        int64_t so = s->offset, dof = d->offset;
        for (int64_t i = 0; i < last; i++) { so += idx[i] * ss[i]; dof += idx[i] * ds[i]; }
        memcpy(d->aligned + dof * elem, s->aligned + so * elem, (size_t)(elem * run));
        for (int64_t i = last - 1; i >= 0; i--) { if (++idx[i] < sizes[i]) break; idx[i] = 0; }
    }
}

#define UPNAME_CACHE 1024
#define UPNAME_SPARE 256
/* spare: the async runtime's tokens and groups kept for the next call (see the async section),
 * under the spin lock `slock`, since the last reference to one may go on a pool thread. */
struct NAME_ctx { char error[256]; void *blk[UPNAME_CACHE]; int nblk; int threads; int intra; NAME_ctx *sub[UPNAME_MAX_THREADS]; void *pool; jmp_buf oom; volatile int armed; int busy; int failed; void *spare[UPNAME_SPARE]; int nspare; void *frames[UPNAME_SPARE]; int nframes; int slock; };
static __thread NAME_ctx *NAME_current;
/* A coroutine frame's header, just before the frame (see the async section); `block` is what
 * malloc gave. */
typedef struct { size_t size, align; NAME_ctx *home; void *block; } NAME_frame;
/* A pool thread running a task: where an allocation that fails jumps back to (the task is
 * abandoned, its token set as an error, and the run that handed it out fails with
 * UPNAME_ERR_MEMORY). */
static __thread jmp_buf *NAME_task_oom;
static __thread void *NAME_last_token;
static void NAME_oom(size_t n) {
    NAME_ctx *ctx = NAME_current;
    if (ctx && ctx->armed) longjmp(ctx->oom, 1);
    if (NAME_task_oom) longjmp(*NAME_task_oom, 1);
    /* Not reached: every allocation happens inside a run, on its thread or a pool task. */
    (void)n;
}
typedef struct { size_t size; size_t pad; } NAME_hdr;
void *NAME_forgec_alloc(size_t n) {
    NAME_ctx *ctx = NAME_current;
    if (ctx) for (int i = ctx->nblk - 1; i >= 0; i--) {
        NAME_hdr *h = (NAME_hdr *)ctx->blk[i];
        if (h->size == n) { ctx->blk[i] = ctx->blk[--ctx->nblk]; return h + 1; }
    }
    NAME_hdr *h = (NAME_hdr *)malloc(sizeof(NAME_hdr) + n);
    if (!h) {
        /* Back to the run, which returns UPNAME_ERR_MEMORY (the call's buffers so far are lost). */
        NAME_oom(n);
        return NULL;
    }
    h->size = n;
    return h + 1;
}
void NAME_forgec_free(void *p) {
    if (!p) return;
    NAME_hdr *h = (NAME_hdr *)p - 1;
    NAME_ctx *ctx = NAME_current;
    if (ctx && ctx->nblk < UPNAME_CACHE) ctx->blk[ctx->nblk++] = h; else free(h);
}

/* A context on one thread (the batch slices' contexts are). */
static NAME_ctx *NAME_new(void) {
    NAME_ctx *ctx = (NAME_ctx *)calloc(1, sizeof(NAME_ctx));
    if (ctx) ctx->threads = 1;
    return ctx;
}
struct NAME_pool;
static void NAME_pool_stop(struct NAME_pool *pl);
void NAME_destroy(NAME_ctx *ctx) {
    if (!ctx) return;
    NAME_pool_stop((struct NAME_pool *)ctx->pool);
    for (int i = 0; i < ctx->nblk; i++) free(ctx->blk[i]);
    for (int i = 0; i < ctx->nspare; i++) free(ctx->spare[i]);
    for (int i = 0; i < ctx->nframes; i++) free(((NAME_frame *)ctx->frames[i] - 1)->block);
    for (int t = 0; t < UPNAME_MAX_THREADS; t++) NAME_destroy(ctx->sub[t]);
    free(ctx);
}
const char *NAME_last_error(const NAME_ctx *ctx) { return ctx ? ctx->error : "the context is NULL"; }
const char *NAME_cpu(void) { return "@cpu@"; }

//@ io
// Shapes and dtypes, once for the inputs and once for the outputs (@what@).
int NAME_@what@_shape(int i, int64_t batch, int64_t *dims) {
    if (!dims) return -1;
    switch (i) {
@shape_cases@
    default: (void)batch; return -1;
    }
}
int NAME_@what@_dtype(int i) {
    switch (i) {
@dtype_cases@
    default: return -1;
    }
}

//@ call
// NAME_call: one call of the kernels on buffers already checked. @descriptors@ are the memref
// descriptors of the inputs, outputs and weights; @unused_batch@ silences an unused batch where no
// shape has one.
static void NAME_drain(NAME_ctx *ctx);
static int NAME_call(@params@) {
@descriptors@
@unused_batch@
    NAME_ctx *volatile outer = NAME_current;
    NAME_current = ctx;
    ctx->failed = 0;
    if (setjmp(ctx->oom)) {
        ctx->armed = 0;
        NAME_drain(ctx);
        NAME_current = outer;
        snprintf(ctx->error, sizeof ctx->error, "out of memory: a scratch buffer for batch %lld could not be allocated", (long long)batch);
        return UPNAME_ERR_MEMORY;
    }
    ctx->armed = 1;
    _mlir_ciface_@entry@(@descs@);
    ctx->armed = 0;
    NAME_current = outer;
    if (__atomic_load_n(&ctx->failed, __ATOMIC_ACQUIRE)) {
        snprintf(ctx->error, sizeof ctx->error, "out of memory: a scratch buffer for batch %lld could not be allocated on a pool thread", (long long)batch);
        return UPNAME_ERR_MEMORY;
    }
    return UPNAME_OK;
}

//@ pool
// Threads: the thread pool, its tasks, and the batch cut into slices, each run by NAME_call with
// the taking thread's own context (and so its own scratch buffers). @fields@ are the job's
// buffers, @slice_args@ their slices.
typedef struct { NAME_ctx *ctx; int64_t batch; int rc; @fields@ } NAME_job;

typedef struct NAME_pool NAME_pool;
typedef struct { NAME_pool *pool; int i; } NAME_slot;
/* Tasks: chunks of a kernel (coroutines of MLIR's async runtime, see below). */
typedef struct { void (*fn)(void *); void *arg; void *token; int *failed; } NAME_task;
#define UPNAME_QCAP (2 * UPNAME_MAX_THREADS)
struct NAME_pool {
    pthread_mutex_t mu; pthread_cond_t go, done;
    unsigned gen; int pending, quit, n, sleeping, qhead, qcount, active;
    NAME_task q[UPNAME_QCAP];
    pthread_t tid[UPNAME_MAX_THREADS]; NAME_slot slot[UPNAME_MAX_THREADS];
    /* A split batch: `whole`, in `nslices` slices of `slice` samples; `next` is the next
     * slice to take; `jobs[t]` is thread t's context and first error. */
    NAME_job whole, jobs[UPNAME_MAX_THREADS]; int64_t slice, nslices, next;
};
static void NAME_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
static int NAME_pool_pop(NAME_pool *pl, NAME_task *t) {
    if (__atomic_load_n(&pl->qcount, __ATOMIC_ACQUIRE) == 0) return 0;
    pthread_mutex_lock(&pl->mu);
    int ok = pl->qcount > 0;
    if (ok) {
        *t = pl->q[pl->qhead];
        pl->qhead = (pl->qhead + 1) % UPNAME_QCAP;
        __atomic_add_fetch(&pl->active, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&pl->qcount, pl->qcount - 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pl->mu);
    return ok;
}
static void NAME_token_fail(void *token);
/* Runs a task (popped from `pl`'s queue, or NULL). An allocation that fails inside it jumps
 * back here: the task is abandoned, its token set as an error (so that nobody waits for it),
 * and its run marked as failed. */
static void NAME_run_task(NAME_pool *pl, NAME_task t) {
    jmp_buf here;
    jmp_buf *outer = NAME_task_oom;
    NAME_ctx *ctx = NAME_current;
    int armed = ctx ? ctx->armed : 0;
    if (ctx) ctx->armed = 0;
    NAME_task_oom = &here;
    if (setjmp(here) == 0) t.fn(t.arg);
    else {
        if (t.failed) __atomic_store_n(t.failed, 1, __ATOMIC_RELEASE);
        if (t.token) NAME_token_fail(t.token);
    }
    NAME_task_oom = outer;
    if (ctx) ctx->armed = armed;
    if (pl) __atomic_sub_fetch(&pl->active, 1, __ATOMIC_ACQ_REL);
}
static void NAME_pool_push(NAME_pool *pl, NAME_task t) {
    pthread_mutex_lock(&pl->mu);
    /* A full queue: the task runs here and now (a coroutine may be resumed once saved). */
    if (pl->qcount == UPNAME_QCAP) { pthread_mutex_unlock(&pl->mu); NAME_run_task(NULL, t); return; }
    pl->q[(pl->qhead + pl->qcount) % UPNAME_QCAP] = t;
    __atomic_store_n(&pl->qcount, pl->qcount + 1, __ATOMIC_RELEASE);
    if (pl->sleeping) pthread_cond_signal(&pl->go);
    pthread_mutex_unlock(&pl->mu);
}
/* Takes slices of a split batch, one after another, until none is left (after an error
 * none is taken). */
static void NAME_take(NAME_pool *pl, int t);
/* A pool thread: runs tasks as they come (spinning a while for the next one, as a kernel hands
 * out chunks every few microseconds, then sleeping), and its slice of each new generation of
 * batch-split jobs (if it has rows). */
static void *NAME_pool_main(void *p) {
    NAME_slot *s = (NAME_slot *)p;
    NAME_pool *pl = s->pool;
    unsigned seen = 0;
    NAME_task t;
    /* The thread's own context, current while it runs tasks: their scratch buffers, tokens and
     * coroutine frames are kept in it for the next call (NULL, if it cannot be had: then they
     * are malloc'ed each time). */
    NAME_ctx *own = NAME_new();
    NAME_current = own;
    for (;;) {
        for (long spin = 0; spin < (1L << 15); spin++) {
            if (NAME_pool_pop(pl, &t)) { NAME_run_task(pl, t); spin = 0; continue; }
            if (__atomic_load_n(&pl->gen, __ATOMIC_ACQUIRE) != seen || __atomic_load_n(&pl->quit, __ATOMIC_ACQUIRE)) break;
            NAME_relax();
        }
        pthread_mutex_lock(&pl->mu);
        while (pl->gen == seen && !pl->quit && pl->qcount == 0) {
            pl->sleeping++;
            pthread_cond_wait(&pl->go, &pl->mu);
            pl->sleeping--;
        }
        if (pl->quit) { pthread_mutex_unlock(&pl->mu); break; }
        if (pl->gen == seen) { pthread_mutex_unlock(&pl->mu); continue; }
        seen = pl->gen;
        pthread_mutex_unlock(&pl->mu);
        NAME_take(pl, s->i);
        pthread_mutex_lock(&pl->mu);
        if (--pl->pending == 0) pthread_cond_signal(&pl->done);
        pthread_mutex_unlock(&pl->mu);
    }
    NAME_current = NULL;
    NAME_destroy(own);
    return NULL;
}
static void NAME_pool_stop(NAME_pool *pl) {
    if (!pl) return;
    pthread_mutex_lock(&pl->mu);
    __atomic_store_n(&pl->quit, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pl->go);
    pthread_mutex_unlock(&pl->mu);
    for (int i = 1; i <= pl->n; i++) pthread_join(pl->tid[i], NULL);
    pthread_mutex_destroy(&pl->mu); pthread_cond_destroy(&pl->go); pthread_cond_destroy(&pl->done);
    free(pl);
}
/* After a run jumped out on an out-of-memory: the tasks it handed out are run or finished
 * before it returns, so that none writes to the caller's buffers after. */
static void NAME_drain(NAME_ctx *ctx) {
    NAME_pool *pl = (NAME_pool *)ctx->pool;
    NAME_task t;
    if (!pl) return;
    for (;;) {
        if (NAME_pool_pop(pl, &t)) { NAME_run_task(pl, t); continue; }
        if (__atomic_load_n(&pl->active, __ATOMIC_ACQUIRE) == 0 && __atomic_load_n(&pl->qcount, __ATOMIC_ACQUIRE) == 0) return;
        NAME_relax();
    }
}
/* Starts threads - 1 pool threads (the caller's thread is the first worker). */
static NAME_pool *NAME_pool_start(int threads) {
    NAME_pool *pl = (NAME_pool *)calloc(1, sizeof *pl);
    if (!pl) return NULL;
    pthread_mutex_init(&pl->mu, NULL); pthread_cond_init(&pl->go, NULL); pthread_cond_init(&pl->done, NULL);
    for (int i = 1; i < threads; i++) {
        pl->slot[i].pool = pl; pl->slot[i].i = i;
        if (pthread_create(&pl->tid[i], NULL, NAME_pool_main, &pl->slot[i]) != 0) break;
        pl->n = i;
    }
    return pl;
}

static void NAME_take(NAME_pool *pl, int t) {
    NAME_job *j = &pl->jobs[t];
    const NAME_job *w = &pl->whole;
    for (;;) {
        int64_t k = __atomic_fetch_add(&pl->next, 1, __ATOMIC_RELAXED);
        if (k >= pl->nslices) return;
        int64_t b0 = k * pl->slice, n = w->batch - b0 < pl->slice ? w->batch - b0 : pl->slice;
        int rc = NAME_call(j->ctx, n, @slice_args@);
        if (rc != UPNAME_OK) { j->rc = rc; __atomic_store_n(&pl->next, pl->nslices, __ATOMIC_RELAXED); return; }
    }
}
//@ async
// MLIR's async runtime (the calls `convert-async-to-llvm` makes, renamed `NAME_forgec_async_*` by
// `llvm::compile`), for the one pattern `async-parallel-for` uses: the calling thread hands a
// kernel's chunks but the first to the pool as tasks (coroutines), runs the first, and waits for
// the group of their tokens, running queued tasks itself while it waits (so a pool thread that is
// slow to wake delays nothing). Tokens and groups are reference counted; a token joins at most one
// group. `NAME_forgec_threads` is the number of threads the running call lends the kernels: the
// context's pool plus the caller, or 1 (one thread; a slice of a split batch).
// A token or a group comes from the spares of the context whose thread made it (`home`) and
// goes back there with its last reference, on whichever thread drops it: a steady stream of
// calls makes them without malloc. A context's pool threads are joined before it is freed, so
// no reference outlives its home.
typedef struct { long refs; NAME_ctx *home; } NAME_rc;
typedef struct { NAME_rc rc; long pending, rank, errors; } NAME_group;
typedef struct { NAME_rc rc; int state; NAME_group *grp; } NAME_token;
typedef union { NAME_group g; NAME_token t; } NAME_async_obj;
static void NAME_lock(int *l) { while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) NAME_relax(); }
static void NAME_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
static void *NAME_async_new(void) {
    NAME_ctx *ctx = NAME_current;
    void *p = NULL;
    if (ctx) {
        NAME_lock(&ctx->slock);
        if (ctx->nspare > 0) p = ctx->spare[--ctx->nspare];
        NAME_unlock(&ctx->slock);
    }
    if (!p) p = malloc(sizeof(NAME_async_obj));
    if (!p) { NAME_oom(sizeof(NAME_async_obj)); return NULL; }
    memset(p, 0, sizeof(NAME_async_obj));
    ((NAME_rc *)p)->home = ctx;
    return p;
}
#define NAME_TOKEN_DONE ((NAME_group *)1)
int64_t NAME_forgec_threads(void) {
    NAME_ctx *ctx = NAME_current;
    return ctx && ctx->intra > 1 ? ctx->intra : 1;
}
int64_t NAME_forgec_async_GetNumWorkerThreads(void) { return NAME_forgec_threads(); }
void NAME_forgec_async_AddRef(void *p, int64_t n) { __atomic_add_fetch(&((NAME_rc *)p)->refs, n, __ATOMIC_RELAXED); }
void NAME_forgec_async_DropRef(void *p, int64_t n) {
    if (__atomic_sub_fetch(&((NAME_rc *)p)->refs, n, __ATOMIC_ACQ_REL) != 0) return;
    NAME_ctx *home = ((NAME_rc *)p)->home;
    if (home) {
        NAME_lock(&home->slock);
        if (home->nspare < UPNAME_SPARE) { home->spare[home->nspare++] = p; p = NULL; }
        NAME_unlock(&home->slock);
    }
    free(p);
}
// Coroutine frames: MLIR's async lowering makes one per task with aligned_alloc and frees it with
// free, renamed NAME_forgec_frame_alloc/free by `llvm::compile`. They are kept like tokens, in
// the spares of the context that made them, found again by size and alignment. A header before
// the frame says where the block starts and whose it is.
void *NAME_forgec_frame_alloc(size_t align, size_t n) {
    NAME_ctx *ctx = NAME_current;
    char *p = NULL;
    if (ctx) {
        NAME_lock(&ctx->slock);
        for (int i = ctx->nframes - 1; i >= 0; i--) {
            NAME_frame *f = (NAME_frame *)ctx->frames[i] - 1;
            if (f->size == n && f->align == align) { p = (char *)ctx->frames[i]; ctx->frames[i] = ctx->frames[--ctx->nframes]; break; }
        }
        NAME_unlock(&ctx->slock);
    }
    if (!p) {
        /* Room for the header and the alignment: p is the first multiple of it past the header. */
        size_t a = align < 16 ? 16 : align, total = sizeof(NAME_frame) + a + n;
        char *block = (char *)malloc(total);
        if (!block) { NAME_oom(total); return NULL; }
        uintptr_t at = (uintptr_t)(block + sizeof(NAME_frame));
        p = (char *)((at + a - 1) / a * a);
        ((NAME_frame *)p - 1)->block = block;
    }
    NAME_frame *f = (NAME_frame *)p - 1;
    f->size = n; f->align = align; f->home = ctx;
    return p;
}
void NAME_forgec_frame_free(void *p) {
    if (!p) return;
    NAME_frame *f = (NAME_frame *)p - 1;
    NAME_ctx *home = f->home;
    if (home) {
        NAME_lock(&home->slock);
        int kept = home->nframes < UPNAME_SPARE;
        if (kept) home->frames[home->nframes++] = p;
        NAME_unlock(&home->slock);
        if (kept) return;
    }
    free(f->block);
}
void *NAME_forgec_async_CreateToken(void) {
    NAME_token *t = (NAME_token *)NAME_async_new();
    if (!t) return NULL;
    t->rc.refs = 2; /* the caller's, and the task's until it sets the token */
    NAME_last_token = t; /* the task `Execute` is handed next is this token's */
    return t;
}
void *NAME_forgec_async_CreateGroup(int64_t size) {
    NAME_group *g = (NAME_group *)NAME_async_new();
    if (!g) return NULL;
    g->rc.refs = 1;
    g->pending = size;
    return g;
}
static void NAME_group_done(NAME_group *g, int error) {
    if (error) __atomic_add_fetch(&g->errors, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&g->pending, 1, __ATOMIC_ACQ_REL);
    NAME_forgec_async_DropRef(g, 1);
}
int64_t NAME_forgec_async_AddTokenToGroup(NAME_token *t, NAME_group *g) {
    int64_t rank = __atomic_fetch_add(&g->rank, 1, __ATOMIC_RELAXED);
    NAME_forgec_async_AddRef(g, 1);
    NAME_group *none = NULL;
    if (!__atomic_compare_exchange_n(&t->grp, &none, g, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        NAME_group_done(g, __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) == 2); /* set already */
    return rank;
}
static void NAME_token_set(NAME_token *t, int state) {
    __atomic_store_n(&t->state, state, __ATOMIC_RELEASE);
    NAME_group *g = __atomic_exchange_n(&t->grp, NAME_TOKEN_DONE, __ATOMIC_ACQ_REL);
    if (g) NAME_group_done(g, state == 2);
    NAME_forgec_async_DropRef(t, 1);
}
void NAME_forgec_async_EmplaceToken(NAME_token *t) { NAME_token_set(t, 1); }
static void NAME_token_fail(void *t) { NAME_token_set((NAME_token *)t, 2); }
void NAME_forgec_async_SetTokenError(NAME_token *t) { NAME_token_set(t, 2); }
_Bool NAME_forgec_async_IsTokenError(NAME_token *t) { return __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) == 2; }
_Bool NAME_forgec_async_IsGroupError(NAME_group *g) { return __atomic_load_n(&g->errors, __ATOMIC_ACQUIRE) > 0; }
/* Waits until `*v` (a counter or a state) reaches `until`, running the pool's tasks meanwhile. */
static void NAME_wait(long *pending, int *state) {
    NAME_ctx *ctx = NAME_current;
    NAME_pool *pl = ctx ? (NAME_pool *)ctx->pool : NULL;
    NAME_task t;
    for (long spin = 0;; spin++) {
        if (pending ? __atomic_load_n(pending, __ATOMIC_ACQUIRE) <= 0 : __atomic_load_n(state, __ATOMIC_ACQUIRE) != 0) return;
        if (pl && NAME_pool_pop(pl, &t)) { NAME_run_task(pl, t); continue; }
        if (spin > (1L << 12)) sched_yield(); else NAME_relax();
    }
}
void NAME_forgec_async_AwaitAllInGroup(NAME_group *g) { NAME_wait(&g->pending, NULL); }
void NAME_forgec_async_AwaitToken(NAME_token *t) { NAME_wait(NULL, &t->state); }
void NAME_forgec_async_Execute(void *handle, void (*resume)(void *)) {
    NAME_ctx *ctx = NAME_current;
    NAME_pool *pl = ctx ? (NAME_pool *)ctx->pool : NULL;
    NAME_task t = { resume, handle, NAME_last_token, ctx ? &ctx->failed : NULL };
    NAME_last_token = NULL;
    if (!pl) { NAME_run_task(NULL, t); return; } /* one thread makes one chunk: not reached */
    NAME_pool_push(pl, t);
}
//@ threads
// set_threads, threads, and the start of create.
static int NAME_set_threads_owned(NAME_ctx *ctx, int threads) {
    ctx->error[0] = 0;
    if (threads < 1 || threads > UPNAME_MAX_THREADS) { snprintf(ctx->error, sizeof ctx->error, "%d threads: use 1..%d", threads, UPNAME_MAX_THREADS); return UPNAME_ERR_ARG; }
    if (threads == ctx->threads) return UPNAME_OK;
    NAME_pool_stop((NAME_pool *)ctx->pool);
    ctx->pool = NULL;
    ctx->threads = 1;
    if (threads > 1) {
        ctx->pool = NAME_pool_start(threads);
        if (!ctx->pool || ((NAME_pool *)ctx->pool)->n == 0) { NAME_pool_stop((NAME_pool *)ctx->pool); ctx->pool = NULL; snprintf(ctx->error, sizeof ctx->error, "could not start %d threads", threads); return UPNAME_ERR_ARG; }
    }
    ctx->threads = threads;
    return UPNAME_OK;
}

int NAME_set_threads(NAME_ctx *ctx, int threads) {
    if (!ctx) return UPNAME_ERR_NULL;
    if (__atomic_exchange_n(&ctx->busy, 1, __ATOMIC_ACQUIRE)) return UPNAME_ERR_BUSY;
    int rc = NAME_set_threads_owned(ctx, threads);
    __atomic_store_n(&ctx->busy, 0, __ATOMIC_RELEASE);
    return rc;
}
int NAME_threads(const NAME_ctx *ctx) { return ctx ? ctx->threads : 0; }
NAME_ctx *NAME_create(void) {
    NAME_ctx *ctx = NAME_new();
//@ create_threads
// A library compiled with --threads N > 1: a new context starts N threads.
    if (ctx && NAME_set_threads(ctx, @threads@) != UPNAME_OK) { NAME_destroy(ctx); return NULL; }
//@ create_end
    return ctx;
}

//@ run
// NAME_run_owned: the arguments checked (@checks@: NULL buffers, indices, overlaps), then the
// batch run whole, split across threads, or slice by slice.
static int NAME_run_owned(@params@) {
    if (!ctx) return UPNAME_ERR_NULL;
    ctx->error[0] = 0;
    if (batch < 0 || batch > UPNAME_MAX_BATCH) { snprintf(ctx->error, sizeof ctx->error, "batch size %lld is outside 0..%lld", (long long)batch, (long long)UPNAME_MAX_BATCH); return UPNAME_ERR_BATCH; }
@checks@
//@ weights_missing
// With --weights external: a library whose weights file was not mapped says why.
    if (!NAME_weights) { snprintf(ctx->error, sizeof ctx->error, "%s", NAME_weights_error); return UPNAME_ERR_WEIGHTS; }
//@ split
// A batch that may be cut across threads: it is split when every thread gets a slice worth it
// (@min_rows@ samples, capi::min_slice); the threads take slices of at most @slice@ samples
// (capi::cache_slice) in turn, so that a thread slowed by another program takes fewer; as many
// slices as a multiple of the threads, of near-equal size. Otherwise the kernels split their rows
// (NAME_forgec_threads).
    NAME_pool *pl = (NAME_pool *)ctx->pool;
    int nt = ctx->threads < batch ? ctx->threads : (int)batch;
    if (pl && nt > pl->n + 1) nt = pl->n + 1;
    if (batch / @min_rows@ < nt) nt = batch / @min_rows@ > 1 ? (int)(batch / @min_rows@) : 1;
    if (pl && nt > 1 && nt == pl->n + 1) {
        ctx->intra = 1;
        int64_t even = (batch + nt - 1) / nt;
        int64_t most = even < @slice@ ? even : @slice@, ns = (batch + most - 1) / most;
        ns = (ns + nt - 1) / nt * nt;
        pl->slice = (batch + ns - 1) / ns;
        pl->nslices = (batch + pl->slice - 1) / pl->slice;
        pl->next = 0;
        pl->whole.batch = batch; @whole@
        for (int t = 0; t < nt; t++) {
            if (t > 0 && !ctx->sub[t]) ctx->sub[t] = NAME_new();
            NAME_ctx *tc = t == 0 ? ctx : ctx->sub[t];
            if (!tc) return NAME_call(ctx, batch, @args@);
            pl->jobs[t].ctx = tc; pl->jobs[t].rc = UPNAME_OK;
        }
        pthread_mutex_lock(&pl->mu);
        pl->pending = pl->n;
        __atomic_store_n(&pl->gen, pl->gen + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&pl->go);
        pthread_mutex_unlock(&pl->mu);
        NAME_take(pl, 0);
        pthread_mutex_lock(&pl->mu);
        while (pl->pending > 0) pthread_cond_wait(&pl->done, &pl->mu);
        pthread_mutex_unlock(&pl->mu);
        for (int t = 0; t < nt; t++) if (pl->jobs[t].rc != UPNAME_OK) {
            if (t > 0) snprintf(ctx->error, sizeof ctx->error, "%s", pl->jobs[t].ctx->error);
            return pl->jobs[t].rc;
        }
        return UPNAME_OK;
    }
//@ slices
// One thread: a batch larger than a slice runs slice by slice all the same.
    if (!pl && batch > @slice@) {
        ctx->intra = 1;
        for (int64_t b0 = 0; b0 < batch; b0 += @slice@) {
            int rc = NAME_call(ctx, batch - b0 < @slice@ ? batch - b0 : @slice@, @slice_args@);
            if (rc != UPNAME_OK) return rc;
        }
        return UPNAME_OK;
    }
//@ run_end
// The end of NAME_run_owned; NAME_run, one call at a time per context (a second thread's call is
// refused, never run alongside); NAME_run_v.
    ctx->intra = ctx->pool ? ((NAME_pool *)ctx->pool)->n + 1 : 1;
    return NAME_call(ctx, batch, @args@);
}

int NAME_run(@params@) {
    if (!ctx) return UPNAME_ERR_NULL;
    if (__atomic_exchange_n(&ctx->busy, 1, __ATOMIC_ACQUIRE)) return UPNAME_ERR_BUSY;
    int rc = NAME_run_owned(ctx, batch, @args@);
    __atomic_store_n(&ctx->busy, 0, __ATOMIC_RELEASE);
    return rc;
}

int NAME_run_v(NAME_ctx *ctx, int64_t batch, const void *const *inputs, void *const *outputs) {
    if (!ctx) return UPNAME_ERR_NULL;
    if (!inputs || !outputs) { snprintf(ctx->error, sizeof ctx->error, "the input or output array is NULL"); return UPNAME_ERR_NULL; }
    return NAME_run(@call_v@);
}
