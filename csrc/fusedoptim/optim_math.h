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

enum { FO_MOM_NONE = 0, FO_MOM_FIRST = 1, FO_MOM_UPDATE = 2 };
enum { FO_WD_NONE = 0, FO_WD_COUPLED = 1, FO_WD_DECOUPLED = 2 };

#endif
