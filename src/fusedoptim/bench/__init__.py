"""Benchmark: fusedoptim vs torch.optim (for-loop, foreach, fused) on CPU.

    python -m fusedoptim.bench                      # default comparison (core optimizers, W1-W4,
                                                    # options table, convergence demo)
    python -m fusedoptim.bench --family             # every optimizer (= --optimizers all): long
    python -m fusedoptim.bench --family --workloads all   # everything the issues target
    python -m fusedoptim.bench --quick              # small sizes, every optimizer once (CI smoke run)
    python -m fusedoptim.bench --convergence        # only the bf16 convergence demonstration
    python -m fusedoptim.bench --workloads W3 --optimizers adamw --threads 1 --repeats 5
    python -m fusedoptim.bench --markdown           # tables as markdown, for the README
    python -m fusedoptim.bench --json out.json      # machine-readable results
    python -m fusedoptim.bench --plot results.png   # chart of the results (x torch's best mode and
                                                    # % of roofline per case) + results-convergence.png

Contenders, per optimizer (see OPTIMIZERS for the hyper-parameters):

    roofline    fusedoptim._C.roofline: reads and writes exactly the bytes the
                optimizer must move (its traffic model, below), on the same
                thread pool with the same work split; the speed limit
    fusedoptim  fusedoptim.<Optimizer>
    forloop     torch.optim.<Optimizer>(foreach=False), torch's CPU default
                (Lion, LAMB: fusedoptim._reference.LionTorch / LAMBTorch, the
                plain-torch for-loop: torch has neither)
    foreach     torch.optim.<Optimizer>(foreach=True)   (where torch has it)
    fused       torch.optim.<Optimizer>(fused=True)     (SGD, Adam, AdamW, Adagrad)

Workloads: W1 one tensor of 16,777,216 fp32 elements; W2 a transformer-like
parameter set (35,299,328 elements in 75 tensors); W3 2,000 tensors of 512
elements (per-tensor overhead); W4 = W1 in bf16; W2bf16 = W2 in bf16.

Traffic model (bytes per element per step): derived from the optimizer's
own state, not a table: a probe step on a small param of the workload's dtype
lists the state arrays fusedoptim keeps (their dtypes follow state_dtype /
master_weights); then the param (or its fp32 master copy) and every state
array are read and written once, the grad read once, and with master weights
the low-precision param written once. LAMB makes two passes (moments and
norms, then the trust-ratio update), which re-read the param and both moments.

The machine is assumed noisy: within a round every contender is timed once,
round-robin; ratios are taken pair by pair within a round and the median over
rounds is reported. Gradients are set once and reused (step() does not free
them). Nothing here asserts speed: targets are reported, not enforced.

The header prints the load average and warns when other processes keep the
CPUs busy (figures then unreliable); the report ends with every case (each
optimizer x dtype x state option timed) under 85% of its own same-traffic
roofline, and the run time.

Modules: workloads (optimizers, workloads, parameter sets), traffic (traffic
model, roofline kernel, calibration), timing_core (samples, rounds, paired
ratios), timing (contenders, measure, measure_options), targets, report
(header, tables, flags), plot (results chart), convergence, cli (arguments,
run plan, main; `python -m fusedoptim.bench` runs __main__).

The pieces are importable: `workload()`, `make_base()`, `traffic_model()`,
`build_contender()`, `measure()` (one measurement: optimizer x workload x
threads), `measure_options()`, `convergence()`, `evaluate_targets()`,
`format_table()` and `main(argv)`.
"""
from .workloads import (  # noqa: F401
    DEFAULT_WORKLOADS, LARGE_WORKLOADS, OPTIMIZER_GROUPS, OPTIMIZERS, W1_NUMEL, W2_NUMEL, W2_TENSORS, W3_NUMEL_EACH,
    W3_TENSORS, WORKLOADS, OptimizerSpec, Workload, _canonical_workload, _clone_params, _transformer_shapes,
    make_base, workload)
from .timing_core import (  # noqa: F401
    DEFAULT_MIN_SAMPLE_S, DEFAULT_REPEATS, DEFAULT_WARMUP, QUICK_MIN_SAMPLE_S, QUICK_REPEATS, _median, _paired,
    _quantile, _run_rounds, _stats, _timed)
from .traffic import Stream, Traffic, _DTYPE_BYTES, roofline_calibration, roofline_step, traffic_model  # noqa: F401
from .targets import (  # noqa: F401
    TARGET_BF16_ROOFLINE, TARGET_BF16_VS_FUSED, TARGET_ROOFLINE, TARGET_UNFUSED_VS_BEST, TARGET_W3_US_PER_TENSOR,
    TARGET_W3_VS_FUSED, evaluate_targets)
from .timing import (  # noqa: F401
    CONTENDERS, OPTION_VARIANTS, TORCH_MODES, Contender, build_contender, measure, measure_options)
from .report import (  # noqa: F401
    FLAG_ROOFLINE, LEGEND, _fmt_ms, _fmt_x, _print, busy_warning, environment, format_details, format_flags,
    format_header, format_options, load_average, under_roofline,
    format_summary, format_table, format_traffic)
from .convergence import (  # noqa: F401
    CONV_EVERY, CONV_LR, CONV_MODES, CONV_STEPS, CONV_WIDTH, QUICK_CONV_EVERY, QUICK_CONV_STEPS, convergence,
    format_convergence, plot_convergence)
from .plot import _rows as plot_rows, plot_results  # noqa: F401
from .cli import QUICK_FAMILY_WORKLOAD, _cases, convergence_plot_path, format_report, main, parse_args, run  # noqa: F401
