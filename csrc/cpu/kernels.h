/* fusedoptim CPU backend: the C API that the Cython layer calls. */
#ifndef FUSEDOPTIM_CPU_KERNELS_H
#define FUSEDOPTIM_CPU_KERNELS_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* storage dtypes; math is in float for every dtype but float64 */
enum { FO_DT_F32 = 0, FO_DT_F64 = 1, FO_DT_BF16 = 2, FO_DT_F16 = 3 };
enum { FO_KIND_SGD = 0, FO_KIND_ADAM = 1 };
enum { FO_ISA_BASELINE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };

/* Elements are grouped in units of FO_UNIT; threads split work on unit
 * boundaries, so two threads never write the same cache line of a tensor. */
#define FO_UNIT 16

/* One tensor of a group: pointers are cached between steps except grad. */
typedef struct {
    void *param, *grad;
    void *s0, *s1, *s2;  /* SGD: s0 = momentum_buffer.
                            Adam: s0 = exp_avg, s1 = exp_avg_sq, s2 = max_exp_avg_sq */
    void *step;          /* scalar step counter (float or double), or NULL   */
    int64_t numel;
    int32_t dtype;       /* FO_DT_*                                          */
    int32_t step_f64;    /* step counter is a double                         */
    int32_t first;       /* SGD: momentum buffer not yet initialised         */
    int32_t pad_;
    double sc0, sc1;     /* per-tensor scalars filled by the serial pre-pass */
} fo_tensor;

typedef struct {
    int32_t kind;        /* FO_KIND_*                                        */
    int32_t wd_mode;     /* FO_WD_* (optim_math.h)                           */
    int32_t amsgrad, nesterov, maximize, pad_;
    double lr, beta1, beta2, eps, weight_decay, momentum, dampening;
} fo_hparams;

typedef struct {
    fo_hparams hp;
    int64_t n;           /* number of tensors                                */
    fo_tensor *t;        /* n entries                                        */
    int64_t *unit_off;   /* n+1 prefix sums of ceil(numel/FO_UNIT)           */
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
int64_t fo_get_grain(void);
void fo_set_grain(int64_t units);

/* Recompute unit_off from the tensors' numel. */
void fo_group_finalize(fo_group *g);
/* One optimizer step over the whole group (thread-safe w.r.t. the GIL: call it
 * with the GIL released). Increments step counters, computes per-tensor
 * scalars, runs the update on torch's pool, clears SGD first-step flags. */
void fo_group_step(fo_group *g);

/* Same-traffic roofline: rw[j][i] = 0.5f*rw[j][i] + 1 + sum_k ro[k][i], i < n. */
void fo_roofline(float **rw, int nrw, float **ro, int nro, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
