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
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

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
        # -O1: the sanitizers check the same code paths, and the build of the
        # many specialized loops takes a fraction of -O3's time
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]

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
        "csrc/fusedoptim/declarations.h",
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


# ---- CUDA -------------------------------------------------------------------
# The CUDA sources ship inside the package (fusedoptim/_csrc) so that an
# installation without a prebuilt CUDA extension can build it on first use
# (fusedoptim._cuda, torch.utils.cpp_extension.load). Copying them needs
# neither torch nor nvcc.
CUDA_SOURCES = ("csrc/cuda", "csrc/fusedoptim")


class build_py_with_csrc(build_py):
    def run(self):
        super().run()
        for d in CUDA_SOURCES:
            if not os.path.isdir(d):
                continue
            dst = os.path.join(self.build_lib, "fusedoptim", "_csrc", os.path.basename(d))
            os.makedirs(dst, exist_ok=True)
            for name in sorted(os.listdir(d)):
                if name.endswith((".h", ".cuh", ".cu", ".cpp")):
                    shutil.copyfile(os.path.join(d, name), os.path.join(dst, name))


cmdclass = {"build_py": build_py_with_csrc}

# FUSEDOPTIM_CUDA=1 builds the CUDA extension ahead of time (fusedoptim._cuda_ops).
# It needs a CUDA build of torch in the build environment and nvcc:
#   FUSEDOPTIM_CUDA=1 pip install --no-build-isolation .
# Architectures: FUSEDOPTIM_CUDA_ARCH (default "80;90"; PTX of the last one is
# embedded too, so newer GPUs JIT it). Without FUSEDOPTIM_CUDA=1 torch is not
# imported and nvcc is never needed.
def _toolkit():
    """src/fusedoptim/_toolkit.py, the one CUDA toolkit finder (loaded by path:
    the package cannot be imported before it is built)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "fusedoptim", "_toolkit.py")
    spec = importlib.util.spec_from_file_location("_fusedoptim_toolkit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if os.environ.get("FUSEDOPTIM_CUDA") == "1":
    _home = _toolkit().cuda_home()
    if _home:
        os.environ["CUDA_HOME"] = _home  # read by torch.utils.cpp_extension at import
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    archs = [a.strip() for a in os.environ.get("FUSEDOPTIM_CUDA_ARCH", "80;90").replace(",", ";").split(";") if a.strip()]
    gencode = []
    for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    exts.append(
        CUDAExtension(
            "fusedoptim._cuda_ops",
            sources=["csrc/cuda/binding.cpp", "csrc/cuda/fused_kernels.cu"],
            include_dirs=[os.path.abspath("csrc"), os.path.abspath("csrc/cuda")],
            # --fmad=false: FMAs only where the math spec writes them (see fused_kernels.cu)
            # the C++ standard is torch's choice (C++20 for torch >= 2.14)
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--fmad=false", *gencode]},
        )
    )

    from setuptools.command.build_ext import build_ext as _plain_build_ext

    class build_ext_cuda(BuildExtension):
        """The C extension with setuptools' own compiler setup (torch's would
        compile kernels.c as C++), then the CUDA extension with torch's."""

        def build_extensions(self):
            every = self.extensions
            cuda = [e for e in every if e.name == "fusedoptim._cuda_ops"]
            self.extensions = [e for e in every if e not in cuda]
            _plain_build_ext.build_extensions(self)
            self.extensions = cuda
            try:
                super().build_extensions()
            finally:
                self.extensions = every

    cmdclass["build_ext"] = build_ext_cuda.with_options(use_ninja=bool(shutil.which("ninja")))

setup(ext_modules=exts, cmdclass=cmdclass)
