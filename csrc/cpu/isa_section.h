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
 * for up to 4 read-write and 2 read-only arrays (every optimizer's traffic). */
static inline __attribute__((always_inline)) void FO_CAT(roof_loop_, FO_ISA)(
    float **rw, float **ro, int64_t b, int64_t e, const int nrw, const int nro)
{
    float *restrict w0 = rw[0];
    float *restrict w1 = nrw > 1 ? rw[1] : NULL;
    float *restrict w2 = nrw > 2 ? rw[2] : NULL;
    float *restrict w3 = nrw > 3 ? rw[3] : NULL;
    const float *restrict r0 = nro > 0 ? ro[0] : NULL;
    const float *restrict r1 = nro > 1 ? ro[1] : NULL;
    for (int64_t i = b; i < e; i++) {
        float s = 1.0f;
        if (nro > 0) s += r0[i];
        if (nro > 1) s += r1[i];
        w0[i] = 0.5f * w0[i] + s;
        if (nrw > 1) w1[i] = 0.5f * w1[i] + s;
        if (nrw > 2) w2[i] = 0.5f * w2[i] + s;
        if (nrw > 3) w3[i] = 0.5f * w3[i] + s;
    }
}

static void FO_CAT(roofline_, FO_ISA)(float **rw, int nrw, float **ro, int nro, int64_t b, int64_t e)
{
#define FO_ROOF_CASE(W, R) \
    case (W) * 3 + (R): FO_CAT(roof_loop_, FO_ISA)(rw, ro, b, e, W, R); return;
    switch (nrw * 3 + nro) {
        FO_ROOF_CASE(1, 0) FO_ROOF_CASE(1, 1) FO_ROOF_CASE(1, 2)
        FO_ROOF_CASE(2, 0) FO_ROOF_CASE(2, 1) FO_ROOF_CASE(2, 2)
        FO_ROOF_CASE(3, 0) FO_ROOF_CASE(3, 1) FO_ROOF_CASE(3, 2)
        FO_ROOF_CASE(4, 0) FO_ROOF_CASE(4, 1) FO_ROOF_CASE(4, 2)
        default: break;
    }
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
