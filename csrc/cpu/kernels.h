/* fusedoptim CPU backend: the C API that the Cython layer calls. */
#ifndef FUSEDOPTIM_CPU_KERNELS_H
#define FUSEDOPTIM_CPU_KERNELS_H
#include <stdint.h>

#include "fusedoptim/optim_math_spec.h"  /* (without FO_T: the declarations and step scalars) */

#ifdef __cplusplus
extern "C" {
#endif

enum { FO_ISA_BASELINE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };

/* Elements are grouped in units of FO_UNIT; threads split work on unit
 * boundaries, so two threads never write the same cache line of a tensor. */
#define FO_UNIT 16
/* Reductions (LAMB's norms, max_grad_norm) sum fixed blocks of FO_RBLOCK
 * units each, combined in a fixed order: results do not depend on threads. */
#define FO_RBLOCK 64

/* One tensor of a group: pointers are cached between steps except grad. */
typedef struct {
    void *param, *grad;
    void *s0, *s1, *s2;  /* state slots 0..2 of the optimizer's declaration   */
    void *master;        /* float32 master weights (param = rounded image)    */
    void *step;          /* scalar step counter (float or double), or NULL   */
    void *aux;           /* NAdam's mu_product scalar, or NULL               */
    int64_t numel;
    int32_t dtype;       /* param and grad storage: FO_DT_*                  */
    int32_t sdtype;      /* state storage: FO_DT_*                           */
    int32_t step_f64;    /* step counter is a double                         */
    int32_t aux_f64;     /* aux scalar is a double                           */
    int32_t first;       /* SGD: momentum buffer not yet initialised         */
    int32_t sr;          /* bfloat16 param stored with stochastic rounding   */
    int32_t index;       /* position in the group: its random stream         */
    fo_step_scalars sc;  /* the step's scalars, filled by the serial pre-pass */
} fo_tensor;

/* One dense tensor: numel elements of dtype FO_DT_* at ptr (contiguous, or any
 * dense non-overlapping layout: the norm ignores order and the scale is
 * element-wise). fo_multi_scale writes through ptr. (The norm and scale of reduce.h.) */
typedef struct {
    const void *ptr;
    int64_t numel;
    int32_t dtype;
} fo_rtensor;

/* fo_hparams: fusedoptim/declarations.h */

typedef struct {
    fo_hparams hp;
    int64_t n;           /* number of tensors                                */
    fo_tensor *t;        /* n entries                                        */
    int64_t *unit_off;   /* n+1 prefix sums of ceil(numel/FO_UNIT)           */
    int64_t *blk_off;    /* n+1 prefix sums of reduction blocks              */
    double *partial;     /* 2 * blk_off[n] doubles of scratch                */
    fo_rtensor *norm_t;  /* n entries: the grads for max_grad_norm's norm    */
    void *norm_scratch;  /* fo_norm_scratch_size(norm_t, n) bytes (reduce.h) */
} fo_group;

/* torch's stable C shim: torch_parallel_for(begin, end, grain, fn, ctx). */
typedef void (*fo_parallel_fn)(int64_t begin, int64_t end, void *ctx);
typedef int32_t (*fo_parallel_for_t)(int64_t, int64_t, int64_t, fo_parallel_fn, void *);

void fo_set_parallel_for(fo_parallel_for_t fn);
/* torch's pool, or NULL when it is not known (then everything runs inline) */
fo_parallel_for_t fo_get_parallel_for(void);
int fo_has_parallel_for(void);
int fo_cpu_supports(int isa);
int fo_set_isa(int isa);          /* returns 0 on success, -1 if the CPU lacks it */
int fo_get_isa(void);
int fo_compiled_isas(void);       /* bit (1 << FO_ISA_*) per variant compiled in */
int64_t fo_get_grain(void);
void fo_set_grain(int64_t units);

/* Recompute unit_off and blk_off (and norm_t's sizes and dtypes, when the
 * caller allocated norm_t) from the tensors; returns the number of reduction
 * blocks (the caller sizes `partial` as 2 doubles per block, and
 * norm_scratch with reduce.h's fo_norm_scratch_size). */
int64_t fo_group_finalize(fo_group *g);
/* One optimizer step over the whole group (thread-safe w.r.t. the GIL: call it
 * with the GIL released). Increments step counters, computes per-tensor
 * scalars, runs the update on torch's pool, clears SGD first-step flags.
 * Returns 1 if the step was skipped (AMP found_inf), else 0. */
/* 1: skipped (AMP found_inf), 0: done, -1: torch_parallel_for reported an
 * error (the step may be incomplete). */
int fo_group_step(fo_group *g);
/* torch_parallel_for errors of the calls that return no status (norms,
 * scaling, roofline), per calling thread: noted, then taken (and cleared). */
void fo_note_pool_error(int rc);
int fo_take_pool_error(void);

/* The declarations, one per optimizer kind (FO_NUM_KINDS entries). */
extern const fo_optimizer_decl fo_optimizers[];

/* Same-traffic roofline: rw[j][i] = 0.5f*rw[j][i] + 1 + sum_k ro[k][i], i < n. */
void fo_roofline(float **rw, int nrw, float **ro, int nro, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
