/*
 * One instruction-set section of the CPU backend: instantiates the math spec
 * and the loops for float and double, plus the range entry point. Included by
 * kernels.c once per ISA with FO_ISA (name suffix) and FO_USE_FMA defined,
 * under the matching `#pragma GCC target`.
 */
#if FO_USE_FMA
#define FO_FMA_F(a, b, c) fmaf((a), (b), (c))
#define FO_FMA_D(a, b, c) fma((a), (b), (c))
#else
#define FO_FMA_F(a, b, c) ((a) * (b) + (c))
#define FO_FMA_D(a, b, c) ((a) * (b) + (c))
#endif

#define FO_IS_FLOAT 1
#define FO_T float
#define FO_NAME(x) FO_CAT(x, FO_CAT(_f32_, FO_ISA))
#define FO_FMA FO_FMA_F
#define FO_SQRT sqrtf
#include "fusedoptim/optim_math_spec.h"
#include "loops_spec.h"
#undef FO_T
#undef FO_NAME
#undef FO_FMA
#undef FO_SQRT
#undef FO_IS_FLOAT

#define FO_IS_FLOAT 0
#define FO_T double
#define FO_NAME(x) FO_CAT(x, FO_CAT(_f64_, FO_ISA))
#define FO_FMA FO_FMA_D
#define FO_SQRT sqrt
#include "fusedoptim/optim_math_spec.h"
#include "loops_spec.h"
#undef FO_T
#undef FO_NAME
#undef FO_FMA
#undef FO_SQRT
#undef FO_IS_FLOAT

static void FO_CAT(range_, FO_ISA)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e,
                                   int pass, double *red)
{
    if (t->dtype == FO_DT_F64) FO_CAT(range_f64_, FO_ISA)(hp, t, b, e, pass, red);
    else                       FO_CAT(range_f32_, FO_ISA)(hp, t, b, e, pass, red);
}

/* Same-traffic roofline: one pass that reads every array once and writes the
 * read-write ones in place, vectorized like the optimizer loops. Specialized
 * for up to 8 read-write and 3 read-only arrays (every optimizer's traffic,
 * with 2-byte streams cut into float arrays of half the length by the
 * benchmarks: bf16 params with float32 moments are 5 read-write arrays). */
static inline __attribute__((always_inline)) void FO_CAT(roof_loop_, FO_ISA)(
    float *restrict w0, float *restrict w1, float *restrict w2, float *restrict w3,
    float *restrict w4, float *restrict w5, float *restrict w6, float *restrict w7,
    const float *restrict r0, const float *restrict r1, const float *restrict r2,
    int64_t b, int64_t e, const int nrw, const int nro)
{
    /* restrict parameters (not locals): no run-time alias checks, which gcc
     * caps at 10 and then leaves the loop scalar */
    for (int64_t i = b; i < e; i++) { /* FO_VEC */
        float s = 1.0f;
        if (nro > 0) s += r0[i];
        if (nro > 1) s += r1[i];
        if (nro > 2) s += r2[i];
        w0[i] = 0.5f * w0[i] + s;
        if (nrw > 1) w1[i] = 0.5f * w1[i] + s;
        if (nrw > 2) w2[i] = 0.5f * w2[i] + s;
        if (nrw > 3) w3[i] = 0.5f * w3[i] + s;
        if (nrw > 4) w4[i] = 0.5f * w4[i] + s;
        if (nrw > 5) w5[i] = 0.5f * w5[i] + s;
        if (nrw > 6) w6[i] = 0.5f * w6[i] + s;
        if (nrw > 7) w7[i] = 0.5f * w7[i] + s;
    }
}

static void FO_CAT(roofline_, FO_ISA)(float **rw, int nrw, float **ro, int nro, int64_t b, int64_t e)
{
#define FO_ROOF_CASE(W, R) \
    case (W) * 4 + (R):                                                                    \
        FO_CAT(roof_loop_, FO_ISA)(rw[0], W > 1 ? rw[1] : NULL, W > 2 ? rw[2] : NULL,       \
                                   W > 3 ? rw[3] : NULL, W > 4 ? rw[4] : NULL,              \
                                   W > 5 ? rw[5] : NULL, W > 6 ? rw[6] : NULL,              \
                                   W > 7 ? rw[7] : NULL, R > 0 ? ro[0] : NULL,              \
                                   R > 1 ? ro[1] : NULL, R > 2 ? ro[2] : NULL, b, e, W, R); \
        return;
#define FO_ROOF_CASES(W) FO_ROOF_CASE(W, 0) FO_ROOF_CASE(W, 1) FO_ROOF_CASE(W, 2) FO_ROOF_CASE(W, 3)
    switch (nro <= 3 ? nrw * 4 + nro : -1) {
        FO_ROOF_CASES(1) FO_ROOF_CASES(2) FO_ROOF_CASES(3) FO_ROOF_CASES(4)
        FO_ROOF_CASES(5) FO_ROOF_CASES(6) FO_ROOF_CASES(7) FO_ROOF_CASES(8)
        default: break;
    }
#undef FO_ROOF_CASES
#undef FO_ROOF_CASE
    /* other shapes: one pass per array (same bytes, less locality) */
    for (int j = 0; j < nrw; j++)
        for (int64_t i = b; i < e; i++) {
            float s = 1.0f;
            for (int k = 0; k < nro; k++) s += ro[k][i];
            rw[j][i] = 0.5f * rw[j][i] + s;
        }
}

#undef FO_FMA_F
#undef FO_FMA_D
