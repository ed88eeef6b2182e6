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

typedef void (*fo_range_fn)(const fo_hparams *, const fo_tensor *, int64_t, int64_t);
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
    case FO_ISA_AVX512: g_range = range_avx512; g_roof = roofline_avx512; break;
    case FO_ISA_AVX2:   g_range = range_avx2;   g_roof = roofline_avx2;   break;
#endif
    default:            g_range = range_baseline; g_roof = roofline_baseline; break;
    }
    g_isa = isa;
    return 0;
}

int fo_get_isa(void) { return g_isa; }
void fo_set_parallel_for(fo_parallel_for_t fn) { g_pfor = fn; }
int fo_has_parallel_for(void) { return g_pfor != NULL; }
fo_parallel_for_t fo_get_parallel_for(void) { return g_pfor; }
int64_t fo_get_grain(void) { return g_grain; }
void fo_set_grain(int64_t units) { g_grain = units > 0 ? units : 1; }

void fo_group_finalize(fo_group *g)
{
    int64_t acc = 0;
    g->unit_off[0] = 0;
    for (int64_t i = 0; i < g->n; i++) {
        acc += (g->t[i].numel + FO_UNIT - 1) / FO_UNIT;
        g->unit_off[i + 1] = acc;
    }
}

/* Worker: units [ub, ue) of the group's virtual concatenation. */
static void group_worker(int64_t ub, int64_t ue, void *ctx)
{
    const fo_group *g = (const fo_group *)ctx;
    const int64_t *off = g->unit_off;
    /* first tensor whose unit range contains ub (tensors with 0 units are skipped) */
    int64_t lo = 0, hi = g->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (off[mid + 1] <= ub) lo = mid + 1;
        else hi = mid;
    }
    const fo_range_fn range = g_range;
    for (int64_t i = lo; i < g->n && off[i] < ue; i++) {
        const fo_tensor *t = &g->t[i];
        int64_t b = (ub > off[i] ? ub - off[i] : 0) * FO_UNIT;
        int64_t e = ((ue < off[i + 1] ? ue : off[i + 1]) - off[i]) * FO_UNIT;
        if (e > t->numel) e = t->numel;
        if (b < e) range(&g->hp, t, b, e);
    }
}

static void run_parallel(int64_t total_units, fo_parallel_fn fn, void *ctx)
{
    if (total_units <= 0) return;
    if (g_pfor == NULL || total_units <= g_grain) {
        fn(0, total_units, ctx);
        return;
    }
    g_pfor(0, total_units, g_grain, fn, ctx);
}

static double read_step(const fo_tensor *t)
{
    return t->step_f64 ? *(double *)t->step : (double)*(float *)t->step;
}

static void bump_step(fo_tensor *t)
{
    if (t->step_f64) *(double *)t->step += 1.0;
    else *(float *)t->step += 1.0f;
}

void fo_group_step(fo_group *g)
{
    const fo_hparams *hp = &g->hp;
    if (hp->kind == FO_KIND_ADAM) {
        /* Scalars in double, as torch: step_size = lr / (1 - beta1^t),
         * bc2_sqrt = sqrt(1 - beta2^t). Reused while consecutive steps agree. */
        double last = -1.0, step_size = 0.0, bc2_sqrt = 0.0;
        for (int64_t i = 0; i < g->n; i++) {
            fo_tensor *t = &g->t[i];
            bump_step(t);
            double s = read_step(t);
            if (s != last) {
                step_size = hp->lr / (1.0 - pow(hp->beta1, s));
                bc2_sqrt = sqrt(1.0 - pow(hp->beta2, s));
                last = s;
            }
            t->sc0 = step_size;
            t->sc1 = bc2_sqrt;
        }
    }
    run_parallel(g->unit_off[g->n], group_worker, g);
    if (hp->kind == FO_KIND_SGD)
        for (int64_t i = 0; i < g->n; i++) g->t[i].first = 0;
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
    run_parallel((n + FO_UNIT - 1) / FO_UNIT, roof_worker, &c);
}
