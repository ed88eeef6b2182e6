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
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);
}

/* Stochastic rounding with 16 random bits r. NaN and inf take the RNE path
 * (a NaN whose payload sits in the low bits would otherwise become inf). */
static FO_AI uint16_t fo_f32_to_bf16_sr(float f, uint32_t r)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sr = (uint16_t)((u + (r & 0xFFFFu)) >> 16);
    return (u & 0x7F800000u) == 0x7F800000u ? fo_f32_to_bf16(f) : sr;
}

/* IEEE binary16, in integer and float arithmetic only: bit-exact
 * round-to-nearest-even (as c10::Half and F16C's vcvtps2ph), branch-free so
 * the loops vectorize on every instruction set, and independent of the
 * compiler's _Float16 (absent before GCC 12 / clang 15 on x86: an fp16 path
 * through it would compile to nothing there). Neither direction reads a
 * denormal float as input to a float operation that DAZ could flush. */
static FO_AI uint32_t fo_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static FO_AI float fo_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static FO_AI float fo_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7FFFu;
    uint32_t normal = (em << 13) + 0x38000000u;                 /* exponent + 112 */
    uint32_t special = 0x7F800000u | (em << 13);                /* inf / NaN */
    uint32_t sub = fo_f32_bits((float)(int32_t)em * 0x1p-24f);  /* 0, subnormals: exact */
    uint32_t r = em < 0x0400u ? sub : (em >= 0x7C00u ? special : normal);
    return fo_f32_from_bits(r | sign);
}

static FO_AI uint16_t fo_f32_to_f16(float f)
{
    uint32_t u = fo_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    /* normal halves: rebias, RNE on the 13 dropped bits (a carry into the
     * exponent rounds up to the next binade or to inf) */
    uint32_t nrm = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    /* below 2^-14: align the mantissa at the bottom of 0.5f and let the
     * float adder round (RNE); a float denormal input gives +0 either way */
    uint32_t sub = fo_f32_bits(fo_f32_from_bits(a) + 0.5f) - 0x3F000000u;
    uint32_t r = a < 0x38800000u ? sub : nrm;
    r = a >= 0x47800000u ? 0x7C00u : r;                         /* >= 65536: inf */
    r = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x3FFu)) : r; /* NaN: quiet */
    return (uint16_t)(sign | r);
}

/* Storage element types of the loops' FO_LD / FO_ST (distinct types, so the
 * access is chosen from the pointer's type). */
typedef struct { uint16_t v; } fo_bf16_t;
typedef struct { uint16_t v; } fo_f16_t;

static FO_AI float fo_ld_f32(const float *x, int64_t i) { return x[i]; }
static FO_AI double fo_ld_f64(const double *x, int64_t i) { return x[i]; }
static FO_AI float fo_ld_bf16(const fo_bf16_t *x, int64_t i) { return fo_bf16_to_f32(x[i].v); }
static FO_AI float fo_ld_f16(const fo_f16_t *x, int64_t i) { return fo_f16_to_f32(x[i].v); }
static FO_AI void fo_st_f32(float *x, int64_t i, float v) { x[i] = v; }
static FO_AI void fo_st_f64(double *x, int64_t i, double v) { x[i] = v; }
static FO_AI void fo_st_bf16(fo_bf16_t *x, int64_t i, float v) { x[i].v = fo_f32_to_bf16(v); }
static FO_AI void fo_st_f16(fo_f16_t *x, int64_t i, float v) { x[i].v = fo_f32_to_f16(v); }

/* Element i of a loop's array, widened to the register type; and its store,
 * narrowed with torch's rounding. Plain indexing for float / double. */
#define FO_LD(ptr, i)                                                               \
    _Generic((ptr), float *: fo_ld_f32, double *: fo_ld_f64, fo_bf16_t *: fo_ld_bf16, \
             fo_f16_t *: fo_ld_f16)((ptr), (i))
#define FO_ST(ptr, i, val)                                                          \
    _Generic((ptr), float *: fo_st_f32, double *: fo_st_f64, fo_bf16_t *: fo_st_bf16, \
             fo_f16_t *: fo_st_f16)((ptr), (i), (val))

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
