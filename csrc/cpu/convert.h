/*
 * Storage conversions for low-precision params and state (bfloat16,
 * float16): math always runs on float registers, values are widened on load
 * and narrowed on store. Rounding is torch's: round-to-nearest-even, NaN
 * stays NaN. Stochastic rounding (bfloat16 only) adds 16 random bits below
 * the kept mantissa before truncating: unbiased, E[round(x)] = x.
 */
#ifndef FUSEDOPTIM_CPU_CONVERT_H
#define FUSEDOPTIM_CPU_CONVERT_H
#include <stdint.h>
#include <string.h>

#define FO_AI inline __attribute__((always_inline))

static FO_AI float fo_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* torch's c10::detail::round_to_nearest_even: NaN -> 0x7FC0 */
static FO_AI uint16_t fo_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f)
        return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* Stochastic rounding with 16 random bits r. NaN and inf take the RNE path
 * (a NaN whose payload sits in the low bits would otherwise become inf). */
static FO_AI uint16_t fo_f32_to_bf16_sr(float f, uint32_t r)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u)
        return fo_f32_to_bf16(f);
    return (uint16_t)((u + (r & 0xFFFFu)) >> 16);
}

/* IEEE half through the compiler's _Float16 (F16C instructions where the
 * section's target has them, a correct software conversion elsewhere). */
#if defined(__FLT16_MAX__)
typedef _Float16 fo_half;
static FO_AI float fo_f16_to_f32(fo_half h) { return (float)h; }
static FO_AI fo_half fo_f32_to_f16(float f) { return (fo_half)f; }
#define FO_HAVE_F16 1
#else
#define FO_HAVE_F16 0
#endif

/* A counter-based generator: 32 bits from (element index, stream key); the
 * same element of the same tensor gets the same bits whatever the thread
 * split. (Chris Wellons' "lowbias32" integer hash.) */
static FO_AI uint32_t fo_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static FO_AI uint32_t fo_rand16(uint32_t idx, uint32_t k1, uint32_t k2)
{
    return fo_hash32(fo_hash32(idx ^ k1) + k2);
}

#endif
