"""Build the fusedoptim C extension (Cython + C; torch is not needed to build).

Flags that decide correctness and speed, kept here in one place:
  -O3                 vectorizes the update loops (-O2 does not)
  -fno-math-errno     lets sqrt vectorize (otherwise a libm call per element)
  -fno-trapping-math  as torch builds
  -ffp-contract=off   FMAs only where the math spec writes them, so fp32
                      results are bit-identical to torch's fused kernels
Never -ffast-math (breaks inf/NaN semantics) and never -march=native: the
instruction set is chosen at run time from the variants compiled in.
"""
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # building from an sdist that ships the generated C
    cythonize = None

if sys.platform == "win32":
    cflags = ["/O2", "/fp:precise"]
else:
    cflags = [
        "-O3",
        "-fno-math-errno",
        "-fno-trapping-math",
        "-ffp-contract=off",
        "-fvisibility=hidden",
        "-std=gnu11",
    ]
    if os.environ.get("FUSEDOPTIM_SANITIZE"):
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]

pyx = "src/fusedoptim/_C.pyx"
use_pyx = cythonize is not None and os.path.exists(pyx)
ext = Extension(
    "fusedoptim._C",
    sources=[pyx if use_pyx else "src/fusedoptim/_C.c", "csrc/cpu/kernels.c", "csrc/cpu/reduce.c"],
    include_dirs=["csrc", "csrc/cpu"],
    extra_compile_args=cflags,
    extra_link_args=(["-fsanitize=address,undefined"] if os.environ.get("FUSEDOPTIM_SANITIZE") else []),
    depends=[
        "csrc/fusedoptim/optim_math.h",
        "csrc/fusedoptim/optim_math_spec.h",
        "csrc/cpu/kernels.h",
        "csrc/cpu/isa_section.h",
        "csrc/cpu/loops_spec.h",
        "csrc/cpu/convert.h",
        "csrc/cpu/reduce.h",
        "src/fusedoptim/_reduce.pxi",
    ],
)
exts = [ext]
if use_pyx:
    exts = cythonize(exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})

setup(ext_modules=exts)
