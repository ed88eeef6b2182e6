# Multi-tensor norm and in-place scale (csrc/cpu/reduce.c), for gradient
# clipping (fusedoptim.clip). Included at the end of _C.pyx, so it shares the
# fast tensor-metadata path (fast_meta) with the optimizer plans.
from libc.stdlib cimport malloc

# FO_DT_* and fo_rtensor come from _C.pyx's extern block of kernels.h
# (declaring them here again made Cython warn "redeclared")
cdef extern from "kernels.h" nogil:
    int fo_take_pool_error()

cdef extern from "reduce.h" nogil:
    enum:
        FO_NORM_BLOCK
    size_t fo_norm_scratch_size(const fo_rtensor *t, int64_t n)
    double fo_multi_norm(const fo_rtensor *t, int64_t n, double p, void *scratch, double *per_tensor)
    void fo_multi_scale(const fo_rtensor *t, int64_t n, double coef, void *scratch)
    int fo_rtensors_overlap(const fo_rtensor *t, int64_t n, uintptr_t *work)

NORM_BLOCK = FO_NORM_BLOCK

cdef inline int32_t _c10_to_fo(int32_t code) noexcept nogil:
    # torch's c10::ScalarType numbering (Half = 5, Float = 6, Double = 7,
    # BFloat16 = 15) -> the kernels' FO_DT_* (declarations.h)
    if code == 6:
        return FO_DT_F32
    if code == 7:
        return FO_DT_F64
    if code == 15:
        return FO_DT_BF16
    if code == 5:
        return FO_DT_F16
    return -1

cdef bint _dense(int64_t dim, const int64_t *sizes, const int64_t *strides, int64_t *numel) noexcept:
    """numel, and whether the elements fill numel consecutive slots in some
    dimension order (contiguous or permuted: no gaps, no overlap)."""
    cdef int64_t k, j, n = 1, expect = 1, m = 0
    cdef int64_t ss[64]
    cdef int64_t zz[64]
    for k in range(dim):
        n *= sizes[k]
    numel[0] = n
    if n <= 1:
        return True
    if dim > 64:
        return False
    for k in range(dim):           # insertion sort of the non-trivial dims by stride
        if sizes[k] == 1:
            continue
        j = m
        while j > 0 and ss[j - 1] > strides[k]:
            ss[j] = ss[j - 1]
            zz[j] = zz[j - 1]
            j -= 1
        ss[j] = strides[k]
        zz[j] = sizes[k]
        m += 1
    for k in range(m):
        if ss[k] != expect:
            return False
        expect *= zz[k]
    return True

cdef class RTable:
    """A table of dense CPU tensors (float32/float64/bfloat16/float16) for the
    multi-tensor norm and scale kernels. Built by `rtable`; holds references
    to the tensors it points into."""
    cdef fo_rtensor *t
    cdef int64_t n
    cdef void *scratch
    cdef readonly list tensors
    cdef readonly int dtype_mask     # bit (1 << FO_DT_*) for each dtype present
    cdef readonly bint any_empty     # some tensor has no element

    def __dealloc__(self):
        free(self.t)
        free(self.scratch)

    @property
    def n(self):
        return self.n

    def norm(self, double p):
        """Total norm (a Python float, computed in double); see reduce.h."""
        cdef double r
        with nogil:
            r = fo_multi_norm(self.t, self.n, p, self.scratch, NULL)
        _check_pool()
        return r

    def norms(self, double p):
        """(total norm, [each tensor's norm]) in double."""
        cdef double r
        cdef double *per = <double *>malloc((self.n + 1) * sizeof(double))
        if per == NULL:
            raise MemoryError()
        try:
            with nogil:
                r = fo_multi_norm(self.t, self.n, p, self.scratch, per)
            _check_pool()
            return r, [per[i] for i in range(self.n)]
        finally:
            free(per)

    def overlaps(self):
        """True if two tensors of the table share memory."""
        cdef uintptr_t *work = <uintptr_t *>malloc((2 * self.n + 2) * sizeof(uintptr_t))
        cdef int r
        if work == NULL:
            raise MemoryError()
        r = fo_rtensors_overlap(self.t, self.n, work)
        free(work)
        return r != 0

    def scale(self, double coef):
        """Every element *= coef in place (torch's mul_ by a 0-d tensor:
        float math for float32/bfloat16/float16, double for float64). The
        caller bumps the tensors' version counters."""
        with nogil:
            fo_multi_scale(self.t, self.n, coef, self.scratch)
        _check_pool()

cdef _check_pool():
    """Raise if torch_parallel_for reported an error in this thread's last call."""
    cdef int rc = fo_take_pool_error()
    if rc != 0:
        raise RuntimeError(f"fusedoptim: torch_parallel_for failed (error {rc}); the result is incomplete")

def rtable(list tensors):
    """An RTable over `tensors`, or None if the kernels cannot serve all of
    them: a tensor subclass, a non-CPU or non-strided tensor, another dtype,
    or a layout with gaps or self-overlap. (A negative-bit view is served: the
    norm takes |x| and the scale is linear, so the stored values suffice.)"""
    cdef Py_ssize_t n = PyList_GET_SIZE(tensors), i
    cdef RTable tab = RTable.__new__(RTable)
    cdef Meta m
    cdef int32_t dt
    cdef int64_t numel
    cdef object x
    cdef int64_t sz[64]
    cdef int64_t st[64]
    cdef int64_t k, dim
    tab.tensors = tensors
    tab.n = n
    tab.t = <fo_rtensor *>calloc(n + 1, sizeof(fo_rtensor))
    if tab.t == NULL:
        raise MemoryError()
    for i in range(n):
        x = <object>PyList_GET_ITEM(tensors, i)
        if fast_meta_on and fast_meta(x, &m):
            if m.device != 0:
                return None
            dt = _c10_to_fo(m.dtype)
            if dt < 0 or not _dense(m.dim, m.sizes, m.strides, &numel):
                return None
            tab.t[i].ptr = m.ptr
        else:
            x_type = type(x)
            if x_type is not _torch().Tensor and x_type is not _torch().nn.Parameter:
                return None
            if x.layout is not _torch().strided or x.device.type != "cpu":
                return None
            dt = _DTYPE_CODES.get(x.dtype, -1)
            if dt < 0:
                return None
            shape = x.shape
            stride = x.stride()
            dim = len(shape)
            if dim > 64:
                return None
            for k in range(dim):
                sz[k] = shape[k]
                st[k] = stride[k]
            if not _dense(dim, sz, st, &numel):
                return None
            tab.t[i].ptr = <void *><uintptr_t>x.data_ptr()
        tab.t[i].numel = numel
        tab.t[i].dtype = dt
        tab.dtype_mask |= 1 << dt
        if numel == 0:
            tab.any_empty = True
    tab.scratch = malloc(fo_norm_scratch_size(tab.t, n) + 8)
    if tab.scratch == NULL:
        raise MemoryError()
    return tab

cdef object _torch_mod = None
cdef dict _DTYPE_CODES = None

cdef object _torch():
    global _torch_mod, _DTYPE_CODES
    if _torch_mod is None:
        import torch
        _DTYPE_CODES = dtype_codes(torch)
        _torch_mod = torch
    return _torch_mod
