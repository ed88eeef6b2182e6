/*
 * fusedoptim CPU backend: multi-tensor norm and in-place scale (reduce.h).
 *
 * The per-ISA bodies are the second half of this file, included into itself
 * once per instruction set (baseline, and on x86-64 also x86-64-v3 and
 * x86-64-v4 under `#pragma GCC target`), as kernels.c does with isa_section.h.
 * The ISA in use follows fo_get_isa().
 *
 * Accumulation is in double with 16 independent lanes per block (the
 * compiler vectorizes across lanes, no reassociation needed, so no
 * -ffast-math), combined in a fixed pairwise order; max/min of |x| is taken
 * on the integer bit patterns (for non-negative IEEE values the unsigned
 * order is the numeric order and every NaN sorts above +inf, so NaN
 * propagates for free). Build flags: -O3 -fno-math-errno -ffp-contract=off.
 */
#ifndef FO_REDUCE_SECTION

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reduce.h"
#include "convert.h"  /* bfloat16 / float16 <-> float: the loops' own conversions */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FO_RX86 1
#include <immintrin.h>
#else
#define FO_RX86 0
#endif

#define FO_RCAT_(a, b) a##b
#define FO_RCAT(a, b) FO_RCAT_(a, b)
#define FO_RINLINE static inline __attribute__((always_inline))
#define FO_LANES 16

enum { NK_SQ = 0, NK_ABS = 1, NK_MAX = 2, NK_MIN = 3, NK_NZ = 4, NK_POW = 5 };

/* ---- bit helpers and portable conversions --------------------------------- */

FO_RINLINE float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
FO_RINLINE double f64_from_bits(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

/* fixed pairwise combination of the 16 lanes */
FO_RINLINE double lanes_sum(double *acc)
{
    for (int w = FO_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

int fo_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case FO_DT_F32: return 4;
    case FO_DT_F64: return 8;
    case FO_DT_BF16: case FO_DT_F16: return 2;
    default: return 0;
    }
}

/* ---- per-ISA sections ----------------------------------------------------- */

#define FO_REDUCE_SECTION 1

#define FO_RISA baseline
#define FO_F16C 0
#include "reduce.c"
#undef FO_RISA
#undef FO_F16C

#if FO_RX86
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define FO_RISA avx2
#define FO_F16C 1
#include "reduce.c"
#undef FO_RISA
#undef FO_F16C
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define FO_RISA avx512
#define FO_F16C 1
#include "reduce.c"
#undef FO_RISA
#undef FO_F16C
#pragma GCC pop_options
#endif

#undef FO_REDUCE_SECTION

/* ---- dispatch, blocks, threads -------------------------------------------- */

typedef double (*norm_block_fn)(const fo_rtensor *, int64_t, int64_t, int, double);
typedef void (*scale_block_fn)(const fo_rtensor *, int64_t, int64_t, double);

static void pick(norm_block_fn *nb, scale_block_fn *sb)
{
    switch (fo_get_isa()) {
#if FO_RX86
    case FO_ISA_AVX512: *nb = norm_block_avx512; *sb = scale_block_avx512; return;
    case FO_ISA_AVX2:   *nb = norm_block_avx2;   *sb = scale_block_avx2;   return;
#endif
    default:            *nb = norm_block_baseline; *sb = scale_block_baseline; return;
    }
}

static int64_t nblocks_of(int64_t numel)
{
    return numel > 0 ? (numel + FO_NORM_BLOCK - 1) / FO_NORM_BLOCK : 0;
}

size_t fo_norm_scratch_size(const fo_rtensor *t, int64_t n)
{
    int64_t nb = 0;
    for (int64_t i = 0; i < n; i++) nb += nblocks_of(t[i].numel);
    /* block offsets (n + 1 int64), then one double partial per block */
    return (size_t)(n + 1) * sizeof(int64_t) + (size_t)nb * sizeof(double);
}

typedef struct {
    const fo_rtensor *t;
    int64_t n;
    const int64_t *off;     /* n + 1 prefix sums of block counts */
    double *part;           /* one partial per block (norm) */
    int kind;
    double p, coef;
    norm_block_fn nb;
    scale_block_fn sb;
} rctx;

static int64_t fill_offsets(const fo_rtensor *t, int64_t n, int64_t *off)
{
    off[0] = 0;
    for (int64_t i = 0; i < n; i++) off[i + 1] = off[i] + nblocks_of(t[i].numel);
    return off[n];
}

/* first tensor whose block range contains block b */
static int64_t tensor_of(const int64_t *off, int64_t n, int64_t b)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (off[mid + 1] <= b) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void norm_worker(int64_t bb, int64_t be, void *vctx)
{
    const rctx *c = (const rctx *)vctx;
    int64_t i = tensor_of(c->off, c->n, bb);
    for (int64_t b = bb; b < be; b++) {
        while (c->off[i + 1] <= b) i++;
        const fo_rtensor *t = &c->t[i];
        int64_t start = (b - c->off[i]) * FO_NORM_BLOCK;
        int64_t len = t->numel - start < FO_NORM_BLOCK ? t->numel - start : FO_NORM_BLOCK;
        c->part[b] = c->nb(t, start, len, c->kind, c->p);
    }
}

static void scale_worker(int64_t bb, int64_t be, void *vctx)
{
    const rctx *c = (const rctx *)vctx;
    int64_t i = tensor_of(c->off, c->n, bb);
    for (int64_t b = bb; b < be; b++) {
        while (c->off[i + 1] <= b) i++;
        const fo_rtensor *t = &c->t[i];
        int64_t start = (b - c->off[i]) * FO_NORM_BLOCK;
        int64_t len = t->numel - start < FO_NORM_BLOCK ? t->numel - start : FO_NORM_BLOCK;
        c->sb(t, start, len, c->coef);
    }
}

static void run_blocks(int64_t nblocks, fo_parallel_fn fn, void *ctx)
{
    if (nblocks <= 0) return;
    int64_t grain = fo_get_grain() * FO_UNIT / FO_NORM_BLOCK;
    if (grain < 1) grain = 1;
    fo_parallel_for_t pfor = fo_get_parallel_for();
    if (pfor == NULL || nblocks <= grain) {
        fn(0, nblocks, ctx);
        return;
    }
    fo_note_pool_error((int)pfor(0, nblocks, grain, fn, ctx));
}

/* NaN-propagating max / min */
static double nmax(double a, double b) { return (isnan(a) || a >= b) ? a : b; }
static double nmin(double a, double b) { return (isnan(a) || a <= b) ? a : b; }

double fo_multi_norm(const fo_rtensor *t, int64_t n, double p, void *scratch, double *per_tensor)
{
    int kind = p == 2.0 ? NK_SQ : p == 1.0 ? NK_ABS : p == INFINITY ? NK_MAX :
               p == -INFINITY ? NK_MIN : p == 0.0 ? NK_NZ : NK_POW;
    int64_t *off = (int64_t *)scratch;
    double *part = (double *)(off + n + 1);
    int64_t nblocks = n > 0 ? fill_offsets(t, n, off) : 0;
    rctx c = {t, n, off, part, kind, p, 1.0, NULL, NULL};
    pick(&c.nb, &c.sb);
    run_blocks(nblocks, norm_worker, &c);

    /* serial combination in table order: independent of the thread split */
    double total = kind == NK_MIN ? INFINITY : 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = kind == NK_MIN ? INFINITY : 0.0;
        for (int64_t b = off[i]; b < off[i + 1]; b++) {
            if (kind == NK_MAX) v = nmax(v, part[b]);
            else if (kind == NK_MIN) v = nmin(v, part[b]);
            else v += part[b];
        }
        switch (kind) {
        case NK_MAX: total = nmax(total, v); break;
        case NK_MIN: total = nmin(total, v); break;
        case NK_NZ: total += v != 0.0 ? 1.0 : 0.0; break;
        default: total += v; break;
        }
        if (per_tensor != NULL)
            per_tensor[i] = kind == NK_SQ ? sqrt(v) : kind == NK_POW ? pow(v, 1.0 / p) : v;
    }
    if (kind == NK_SQ) return sqrt(total);
    if (kind == NK_POW) return pow(total, 1.0 / p);
    return total;
}

void fo_multi_scale(const fo_rtensor *t, int64_t n, double coef, void *scratch)
{
    int64_t *off = (int64_t *)scratch;
    int64_t nblocks = n > 0 ? fill_offsets(t, n, off) : 0;
    rctx c = {t, n, off, NULL, 0, 0.0, coef, NULL, NULL};
    pick(&c.nb, &c.sb);
    run_blocks(nblocks, scale_worker, &c);
}

static int cmp_uptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

int fo_rtensors_overlap(const fo_rtensor *t, int64_t n, uintptr_t *work)
{
    /* common case: the table is already in increasing or decreasing address
     * order, then one linear pass decides */
    int up = 1, down = 1;
    uintptr_t ps = 0, pe = 0;
    int have = 0;
    for (int64_t i = 0; i < n; i++) {
        if (t[i].numel <= 0) continue;
        uintptr_t s = (uintptr_t)t[i].ptr, e = s + (uintptr_t)t[i].numel * (uintptr_t)fo_dtype_size(t[i].dtype);
        if (have) {
            if (!(pe <= s)) up = 0;
            if (!(e <= ps)) down = 0;
        }
        ps = s; pe = e; have = 1;
        if (!up && !down) break;
    }
    if (up || down) return 0;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (t[i].numel <= 0) continue;
        work[2 * m] = (uintptr_t)t[i].ptr;
        work[2 * m + 1] = work[2 * m] + (uintptr_t)t[i].numel * (uintptr_t)fo_dtype_size(t[i].dtype);
        m++;
    }
    qsort(work, (size_t)m, 2 * sizeof(uintptr_t), cmp_uptr);
    for (int64_t k = 1; k < m; k++)
        if (work[2 * k] < work[2 * k - 1]) return 1;
    return 0;
}

#else /* FO_REDUCE_SECTION: one instruction-set variant -------------------- */

#define RN(x) FO_RCAT(x, FO_RCAT(_, FO_RISA))

/* float <- fp16, n elements (n <= 64) */
FO_RINLINE void RN(h2f)(const uint16_t *restrict src, float *restrict dst, int64_t n)
{
    int64_t j = 0;
#if FO_F16C
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + j))));
    for (; j < n; j++) dst[j] = _cvtsh_ss(src[j]);
#else
    for (; j < n; j++) dst[j] = fo_f16_to_f32(src[j]);
#endif
}

FO_RINLINE void RN(f2h)(const float *restrict src, uint16_t *restrict dst, int64_t n)
{
    int64_t j = 0;
#if FO_F16C
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)(dst + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; j < n; j++) dst[j] = _cvtss_sh(src[j], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    for (; j < n; j++) dst[j] = fo_f32_to_f16(src[j]);
#endif
}

/* Sum-type partials: 16 double lanes, element k of each 16-group to lane k. */
#define FO_SUM_LOOP(LOAD, OP)                                                   \
    do {                                                                        \
        int64_t i_ = 0;                                                         \
        for (; i_ + FO_LANES <= len; i_ += FO_LANES)                            \
            for (int k_ = 0; k_ < FO_LANES; k_++) {                             \
                double v_ = LOAD(i_ + k_);                                      \
                acc[k_] += OP(v_);                                              \
            }                                                                   \
        for (int k_ = 0; i_ + k_ < len; k_++) {                                 \
            double v_ = LOAD(i_ + k_);                                          \
            acc[k_] += OP(v_);                                                  \
        }                                                                       \
    } while (0)

#define FO_OP_SQ(v) ((v) * (v))
#define FO_OP_ABS(v) fabs(v)
#define FO_OP_NZ(v) ((v) != 0.0 ? 1.0 : 0.0)
#define FO_OP_POW(v) pow(fabs(v), p)

#define FO_SUM_KINDS(LOAD)                                                      \
    switch (kind) {                                                             \
    case NK_SQ: FO_SUM_LOOP(LOAD, FO_OP_SQ); break;                             \
    case NK_ABS: FO_SUM_LOOP(LOAD, FO_OP_ABS); break;                           \
    case NK_NZ: FO_SUM_LOOP(LOAD, FO_OP_NZ); break;                             \
    default: FO_SUM_LOOP(LOAD, FO_OP_POW); break;                               \
    }

/* max and min of |x| on the bit patterns (unsigned order == numeric order
 * for non-negative values; NaN above inf). UT: unsigned type, MASK: abs mask. */
#define FO_MINMAX_LOOP(UT, SRC, MASK)                                           \
    do {                                                                        \
        UT mx_[FO_LANES], mn_[FO_LANES];                                        \
        for (int k_ = 0; k_ < FO_LANES; k_++) { mx_[k_] = 0; mn_[k_] = (UT)~(UT)0; } \
        int64_t i_ = 0;                                                         \
        for (; i_ + FO_LANES <= len; i_ += FO_LANES)                            \
            for (int k_ = 0; k_ < FO_LANES; k_++) {                             \
                UT a_ = (UT)(SRC[i_ + k_] & (MASK));                            \
                mx_[k_] = a_ > mx_[k_] ? a_ : mx_[k_];                          \
                mn_[k_] = a_ < mn_[k_] ? a_ : mn_[k_];                          \
            }                                                                   \
        for (int k_ = 0; i_ + k_ < len; k_++) {                                 \
            UT a_ = (UT)(SRC[i_ + k_] & (MASK));                                \
            mx_[k_] = a_ > mx_[k_] ? a_ : mx_[k_];                              \
            mn_[k_] = a_ < mn_[k_] ? a_ : mn_[k_];                              \
        }                                                                       \
        mxb = 0; mnb = (UT)~(UT)0;                                              \
        for (int k_ = 0; k_ < FO_LANES; k_++) {                                 \
            if (mx_[k_] > mxb) mxb = mx_[k_];                                   \
            if (mn_[k_] < mnb) mnb = mn_[k_];                                   \
        }                                                                       \
    } while (0)

static double RN(norm_block)(const fo_rtensor *t, int64_t start, int64_t len, int kind, double p)
{
    double acc[FO_LANES];
    for (int k = 0; k < FO_LANES; k++) acc[k] = 0.0;

    if (kind == NK_MAX || kind == NK_MIN) {
        double vmax, vmin;
        int has_nan;
        switch (t->dtype) {
        case FO_DT_F32: {
            const uint32_t *restrict x = (const uint32_t *)t->ptr + start;
            uint32_t mxb, mnb;
            FO_MINMAX_LOOP(uint32_t, x, 0x7FFFFFFFu);
            has_nan = mxb > 0x7F800000u;
            vmax = f32_from_bits(mxb); vmin = f32_from_bits(mnb);
            break;
        }
        case FO_DT_F64: {
            const uint64_t *restrict x = (const uint64_t *)t->ptr + start;
            uint64_t mxb, mnb;
            FO_MINMAX_LOOP(uint64_t, x, 0x7FFFFFFFFFFFFFFFull);
            has_nan = mxb > 0x7FF0000000000000ull;
            vmax = f64_from_bits(mxb); vmin = f64_from_bits(mnb);
            break;
        }
        case FO_DT_BF16: {
            const uint16_t *restrict x = (const uint16_t *)t->ptr + start;
            uint16_t mxb, mnb;
            FO_MINMAX_LOOP(uint16_t, x, 0x7FFFu);
            has_nan = mxb > 0x7F80u;
            vmax = fo_bf16_to_f32(mxb); vmin = fo_bf16_to_f32(mnb);
            break;
        }
        default: {  /* FO_DT_F16 */
            const uint16_t *restrict x = (const uint16_t *)t->ptr + start;
            uint16_t mxb, mnb;
            FO_MINMAX_LOOP(uint16_t, x, 0x7FFFu);
            has_nan = mxb > 0x7C00u;
            vmax = fo_f16_to_f32(mxb); vmin = fo_f16_to_f32(mnb);
            break;
        }
        }
        if (has_nan) return NAN;
        return kind == NK_MAX ? vmax : vmin;
    }

    switch (t->dtype) {
    case FO_DT_F32: {
        const float *restrict x = (const float *)t->ptr + start;
#define FO_RLD(j) ((double)x[j])
        FO_SUM_KINDS(FO_RLD)
#undef FO_RLD
        break;
    }
    case FO_DT_F64: {
        const double *restrict x = (const double *)t->ptr + start;
#define FO_RLD(j) (x[j])
        FO_SUM_KINDS(FO_RLD)
#undef FO_RLD
        break;
    }
    case FO_DT_BF16: {
        const uint16_t *restrict x = (const uint16_t *)t->ptr + start;
#define FO_RLD(j) ((double)fo_bf16_to_f32(x[j]))
        FO_SUM_KINDS(FO_RLD)
#undef FO_RLD
        break;
    }
    default: {  /* FO_DT_F16: widen 64 at a time, then the float loop */
        const uint16_t *restrict src = (const uint16_t *)t->ptr + start;
        float buf[64];
        const int64_t total = len;
        for (int64_t c0 = 0; c0 < total; c0 += 64) {
            int64_t clen = total - c0 < 64 ? total - c0 : 64;
            RN(h2f)(src + c0, buf, clen);
            const float *restrict x = buf;
            int64_t len = clen;   /* the loop macros read `len` */
#define FO_RLD(j) ((double)x[j])
            FO_SUM_KINDS(FO_RLD)
#undef FO_RLD
        }
        break;
    }
    }
    return lanes_sum(acc);
}

static void RN(scale_block)(const fo_rtensor *t, int64_t start, int64_t len, double coef)
{
    const float cf = (float)coef;
    switch (t->dtype) {
    case FO_DT_F32: {
        float *restrict x = (float *)t->ptr + start;
        for (int64_t i = 0; i < len; i++) x[i] = x[i] * cf;
        break;
    }
    case FO_DT_F64: {
        double *restrict x = (double *)t->ptr + start;
        for (int64_t i = 0; i < len; i++) x[i] = x[i] * coef;
        break;
    }
    case FO_DT_BF16: {
        uint16_t *restrict x = (uint16_t *)t->ptr + start;
        for (int64_t i = 0; i < len; i++) x[i] = fo_f32_to_bf16(fo_bf16_to_f32(x[i]) * cf);
        break;
    }
    default: {  /* FO_DT_F16 */
        uint16_t *restrict x = (uint16_t *)t->ptr + start;
        float buf[64];
        for (int64_t c0 = 0; c0 < len; c0 += 64) {
            int64_t clen = len - c0 < 64 ? len - c0 : 64;
            RN(h2f)(x + c0, buf, clen);
            for (int64_t j = 0; j < clen; j++) buf[j] = buf[j] * cf;
            RN(f2h)(buf, x + c0, clen);
        }
        break;
    }
    }
}

#undef FO_SUM_LOOP
#undef FO_OP_SQ
#undef FO_OP_ABS
#undef FO_OP_NZ
#undef FO_OP_POW
#undef FO_SUM_KINDS
#undef FO_MINMAX_LOOP
#undef RN

#endif /* FO_REDUCE_SECTION */
