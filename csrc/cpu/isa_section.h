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

static void FO_CAT(range_, FO_ISA)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e)
{
    if (t->dtype == FO_DT_F32) FO_CAT(range_f32_, FO_ISA)(hp, t, b, e);
    else                       FO_CAT(range_f64_, FO_ISA)(hp, t, b, e);
}

static void FO_CAT(roofline_, FO_ISA)(float **rw, int nrw, float **ro, int nro, int64_t b, int64_t e)
{
    for (int j = 0; j < nrw; j++) {
        float *restrict w = rw[j];
        if (j == 0) {
            /* the first read-write array also takes every read-only one */
            for (int64_t i = b; i < e; i++) {
                float acc = 0.5f * w[i];
                for (int k = 0; k < nro; k++) acc += ro[k][i];
                w[i] = acc;
            }
        } else {
            for (int64_t i = b; i < e; i++) w[i] = 0.5f * w[i] + 1.0f;
        }
    }
}

#undef FO_FMA_F
#undef FO_FMA_D
