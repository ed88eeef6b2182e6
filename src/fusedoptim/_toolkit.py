"""Finding the CUDA toolkit: the one finder used by setup.py (which loads this
file by path, before fusedoptim or torch can be imported) and by the JIT
build of fusedoptim._cuda. Standard library only."""
from __future__ import annotations

import os
import shutil


def cuda_home() -> str | None:
    """CUDA_HOME / CUDA_PATH if set, else the toolkit holding the nvcc on PATH
    when its headers are there, else /usr/local/cuda. (torch guesses
    dirname(dirname(nvcc)), which is wrong for a /usr/local/bin/nvcc wrapper
    script: hence the check for the headers.)"""
    for k in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(k):
            return os.environ[k]
    nvcc = shutil.which("nvcc")
    cands = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    cands.append("/usr/local/cuda")
    for c in cands:
        if os.path.exists(os.path.join(c, "include", "cuda_runtime_api.h")):
            return c
    return None


def find_nvcc() -> str | None:
    """nvcc of cuda_home(), or None."""
    home = cuda_home()
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return None
