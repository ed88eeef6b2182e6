/* Shared definitions for the per-element math (optim_math_spec.h). */
#ifndef FUSEDOPTIM_OPTIM_MATH_H
#define FUSEDOPTIM_OPTIM_MATH_H

#define FO_CAT_(a, b) a##b
#define FO_CAT(a, b) FO_CAT_(a, b)

#ifdef __CUDACC__
#define FO_INLINE __forceinline__
#elif defined(_MSC_VER)
#define FO_INLINE __forceinline
#else
#define FO_INLINE inline __attribute__((always_inline))
#endif

#ifndef FO_HD
#ifdef __CUDACC__
#define FO_HD __host__ __device__
#else
#define FO_HD
#endif
#endif

/* the optimizers' declarations and the shared constants (FO_WD_*, FO_MOM_*,
 * FO_DT_*, FO_KIND_*) and fo_hparams */
#include "fusedoptim/declarations.h"

#endif
