/*
 * fusedoptim CPU backend: dispatch, threading and the per-ISA instantiations.
 * The math lives in fusedoptim/optim_math_spec.h; the loops in loops_spec.h.
 *
 * Build flags that matter (setup.py): -O3 -fno-math-errno -ffp-contract=off,
 * never -ffast-math or -march=native. FMAs appear only where the spec asks
 * for them (FO_FMA), and only in the AVX2 / AVX-512 sections.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fusedoptim/optim_math.h"
#include "kernels.h"
#include "reduce.h"
#include "convert.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FO_X86 1
#else
#define FO_X86 0
#endif

/* ---- baseline: what every CPU of the platform runs; no FMA ---------------- */
#define FO_ISA baseline
#define FO_USE_FMA 0
#include "isa_section.h"
#undef FO_ISA
#undef FO_USE_FMA

#if FO_X86
/* ---- x86-64-v3: AVX2 + FMA (torch's ATEN_CPU_CAPABILITY=avx2) ------------- */
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define FO_ISA avx2
#define FO_USE_FMA 1
#include "isa_section.h"
#undef FO_ISA
#undef FO_USE_FMA
#pragma GCC pop_options

/* ---- x86-64-v4: AVX-512 (torch's ATEN_CPU_CAPABILITY=avx512) -------------- */
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define FO_ISA avx512
#define FO_USE_FMA 1
#include "isa_section.h"
#undef FO_ISA
#undef FO_USE_FMA
#pragma GCC pop_options
#endif

typedef void (*fo_range_fn)(const fo_hparams *, const fo_tensor *, int64_t, int64_t, int, double *);
typedef void (*fo_roof_fn)(float **, int, float **, int, int64_t, int64_t);

static fo_range_fn g_range = range_baseline;
static fo_roof_fn g_roof = roofline_baseline;
static int g_isa = FO_ISA_BASELINE;
static fo_parallel_for_t g_pfor = NULL;
/* Units per task below which a region runs inline on the calling thread:
 * 2048 units = 32768 elements, ~1 MB of Adam traffic. */
static int64_t g_grain = 2048;

int fo_cpu_supports(int isa)
{
    switch (isa) {
    case FO_ISA_BASELINE: return 1;
#if FO_X86
    case FO_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2");
    case FO_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default: return 0;
    }
}

int fo_set_isa(int isa)
{
    if (!fo_cpu_supports(isa)) return -1;
    switch (isa) {
#if FO_X86
    case FO_ISA_AVX512:
        g_range = range_avx512; g_roof = roofline_avx512; break;
    case FO_ISA_AVX2:
        g_range = range_avx2; g_roof = roofline_avx2; break;
#endif
    default:
        g_range = range_baseline; g_roof = roofline_baseline; break;
    }
    g_isa = isa;
    return 0;
}

int fo_get_isa(void) { return g_isa; }

int fo_compiled_isas(void)
{
    return (1 << FO_ISA_BASELINE) | (FO_X86 ? (1 << FO_ISA_AVX2) | (1 << FO_ISA_AVX512) : 0);
}
void fo_set_parallel_for(fo_parallel_for_t fn) { g_pfor = fn; }
int fo_has_parallel_for(void) { return g_pfor != NULL; }
fo_parallel_for_t fo_get_parallel_for(void) { return g_pfor; }
int64_t fo_get_grain(void) { return g_grain; }
void fo_set_grain(int64_t units) { g_grain = units > 0 ? units : 1; }

int64_t fo_group_finalize(fo_group *g)
{
    int64_t acc = 0, blk = 0;
    g->unit_off[0] = 0;
    g->blk_off[0] = 0;
    for (int64_t i = 0; i < g->n; i++) {
        int64_t units = (g->t[i].numel + FO_UNIT - 1) / FO_UNIT;
        acc += units;
        blk += (units + FO_RBLOCK - 1) / FO_RBLOCK;
        g->unit_off[i + 1] = acc;
        g->blk_off[i + 1] = blk;
        if (g->norm_t != NULL) {
            g->norm_t[i].numel = g->t[i].numel;
            g->norm_t[i].dtype = g->t[i].dtype;
        }
    }
    return blk;
}

/* the tensor whose [off[i], off[i+1]) contains x (tensors with 0 units skipped) */
static int64_t find_tensor(const int64_t *off, int64_t n, int64_t x)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (off[mid + 1] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

typedef struct { fo_group *g; int pass; } step_ctx;

/* Worker: units [ub, ue) of the group's virtual concatenation. */
static void group_worker(int64_t ub, int64_t ue, void *ctx)
{
    const step_ctx *c = (const step_ctx *)ctx;
    const fo_group *g = c->g;
    const int64_t *off = g->unit_off;
    const fo_range_fn range = g_range;
    for (int64_t i = find_tensor(off, g->n, ub); i < g->n && off[i] < ue; i++) {
        const fo_tensor *t = &g->t[i];
        int64_t b = (ub > off[i] ? ub - off[i] : 0) * FO_UNIT;
        int64_t e = ((ue < off[i + 1] ? ue : off[i + 1]) - off[i]) * FO_UNIT;
        if (e > t->numel) e = t->numel;
        if (b < e) range(&g->hp, t, b, e, c->pass, NULL);
    }
}

/* Worker over LAMB's reduction blocks [bb, be) (pass A: the update, and
 * the block's sum(p^2), sum(u^2) into partial[2*blk], partial[2*blk+1],
 * computed by one thread in a fixed order). */
static void block_worker(int64_t bb, int64_t be, void *ctx)
{
    const step_ctx *c = (const step_ctx *)ctx;
    fo_group *g = c->g;
    const int64_t *off = g->blk_off;
    for (int64_t i = find_tensor(off, g->n, bb); i < g->n && off[i] < be; i++) {
        const fo_tensor *t = &g->t[i];
        int64_t k0 = bb > off[i] ? bb : off[i];
        int64_t k1 = be < off[i + 1] ? be : off[i + 1];
        for (int64_t k = k0; k < k1; k++) {
            int64_t b = (k - off[i]) * FO_RBLOCK * FO_UNIT;
            int64_t e = b + FO_RBLOCK * FO_UNIT;
            if (e > t->numel) e = t->numel;
            double red[2] = {0.0, 0.0};
            g_range(&g->hp, t, b, e, c->pass, red);
            g->partial[2 * k] = red[0];
            g->partial[2 * k + 1] = red[1];
        }
    }
}

/* 0, or torch_parallel_for's error code (nonzero: the pool did not run
 * every chunk; the caller reports it). */
static int run_parallel(int64_t total_units, int64_t grain, fo_parallel_fn fn, void *ctx)
{
    if (total_units <= 0) return 0;
    if (g_pfor == NULL || total_units <= grain) {
        fn(0, total_units, ctx);
        return 0;
    }
    return (int)g_pfor(0, total_units, grain, fn, ctx);
}

static _Thread_local int t_pool_error = 0;

void fo_note_pool_error(int rc) { if (rc != 0) t_pool_error = rc; }

int fo_take_pool_error(void)
{
    int rc = t_pool_error;
    t_pool_error = 0;
    return rc;
}

static double read_scalar(const void *x, int f64)
{
    return f64 ? *(const double *)x : (double)*(const float *)x;
}

static double bump_step(fo_tensor *t)
{
    if (t->step == NULL) return 0.0;
    if (t->step_f64) *(double *)t->step += 1.0;
    else *(float *)t->step += 1.0f;
    return read_scalar(t->step, t->step_f64);
}

/* Per-tensor scalars that depend on the step, in double as torch computes
 * them (fo_<name>_scalars, optim_math_spec.h), once per step value: tensors
 * at the step of the one before reuse its scalars. */
static void pre_pass(fo_group *g)
{
    const fo_hparams *hp = &g->hp;
    double last = -1.0;
    fo_step_scalars cached;
    memset(&cached, 0, sizeof cached);
    for (int64_t i = 0; i < g->n; i++) {
        fo_tensor *t = &g->t[i];
        double s = bump_step(t);
        if (s != last) {
            last = s;
            cached = fo_step_scalars_of(hp->kind, s, hp);
        }
        t->sc = cached;
        if (hp->kind == FO_KIND_NADAM) {
            /* mu_product is per param state (a float32 scalar in torch):
             * updated in its own precision, then read back as torch does */
            double prod;
            if (t->aux_f64) prod = *(double *)t->aux *= t->sc.nadam.mu;
            else prod = *(float *)t->aux *= (float)t->sc.nadam.mu;
            fo_nadam_with_product(&t->sc.nadam, prod, hp->lr);
        }
    }
}

/* The declarations, for Python (fusedoptim._C.OPTIMIZERS). */
#define FO_DECL_(K, name, single, uses, o1, o2, n1, n2, tail, keys, hparams, cuda) \
    {FO_KIND_##K, #name, keys, hparams, cuda},
const fo_optimizer_decl fo_optimizers[] = {FO_OPTIMIZERS(FO_DECL_)};
#undef FO_DECL_

int fo_group_step(fo_group *g)
{
    fo_hparams *hp = &g->hp;
    if (hp->found_inf != NULL && *hp->found_inf != 0.0f)
        return 1;   /* AMP: inf/NaN in the scaled grads, nothing changes */
    step_ctx ctx = {g, FO_PASS_MAIN};
    const int64_t units = g->unit_off[g->n], blocks = g->blk_off[g->n];
    const int64_t bgrain = (g_grain + FO_RBLOCK - 1) / FO_RBLOCK;
    hp->grad_mul = (hp->maximize ? -1.0 : 1.0) * hp->clip_coef;
    hp->grad_norm = 0.0;
    if (hp->max_grad_norm > 0.0) {
        /* one read of the grads: the group's norm (reduce.c's, as
         * fusedoptim.clip_grad_norm_), then the update scales them in
         * registers (clip coefficient as torch's clip_grad_norm_) */
        for (int64_t i = 0; i < g->n; i++) g->norm_t[i].ptr = g->t[i].grad;
        fo_take_pool_error();
        double norm = fo_multi_norm(g->norm_t, g->n, 2.0, g->norm_scratch, NULL);
        if (fo_take_pool_error() != 0)
            return -1;   /* nothing changed yet */
        if (hp->grad_scale != NULL) norm /= (double)*hp->grad_scale;
        hp->grad_norm = norm;
        double coef = hp->max_grad_norm / (norm + 1e-6);
        if (coef < 1.0 || coef != coef) hp->grad_mul *= coef;
    }
    pre_pass(g);
    if (hp->kind == FO_KIND_LAMB) {
        /* pass A: moments, and per-tensor ||p||^2, ||u||^2 from fixed blocks */
        ctx.pass = FO_PASS_LAMB_A;
        if (run_parallel(blocks, bgrain, block_worker, &ctx) != 0)
            return -1;
        for (int64_t i = 0; i < g->n; i++) {
            double wn = 0.0, un = 0.0;
            for (int64_t k = g->blk_off[i]; k < g->blk_off[i + 1]; k++) {
                wn += g->partial[2 * k];
                un += g->partial[2 * k + 1];
            }
            wn = sqrt(wn);
            un = sqrt(un);
            double trust = (wn > 0.0 && un > 0.0) ? wn / un : 1.0;
            g->t[i].sc.lamb.neg_lr_trust = -hp->lr * trust;
        }
        ctx.pass = FO_PASS_LAMB_B;
        /* the grads were unscaled (and stored back) in pass A */
    }
    if (run_parallel(units, g_grain, group_worker, &ctx) != 0)
        return -1;
    if (hp->kind == FO_KIND_SGD)
        for (int64_t i = 0; i < g->n; i++) g->t[i].first = 0;
    return 0;
}

typedef struct { float **rw; int nrw; float **ro; int nro; int64_t n; } roof_ctx;

static void roof_worker(int64_t ub, int64_t ue, void *ctx)
{
    const roof_ctx *c = (const roof_ctx *)ctx;
    int64_t b = ub * FO_UNIT, e = ue * FO_UNIT;
    if (e > c->n) e = c->n;
    if (b < e) g_roof(c->rw, c->nrw, c->ro, c->nro, b, e);
}

void fo_roofline(float **rw, int nrw, float **ro, int nro, int64_t n)
{
    roof_ctx c = {rw, nrw, ro, nro, n};
    fo_note_pool_error(run_parallel((n + FO_UNIT - 1) / FO_UNIT, g_grain, roof_worker, &c));
}
