# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython binding of the fusedoptim CPU backend (csrc/cpu/kernels.c).

The extension links against nothing from torch. At import, fusedoptim hands it
the addresses of a few C functions that torch >= 2.10 exports from
libtorch_cpu.so: the stable shim `torch_parallel_for` (so work runs on torch's
own intra-op pool) and the AOTI tensor accessors (`aoti_torch_get_data_ptr`,
sizes, strides, dtype, device type, layout), which let the per-step loop read
a tensor's metadata in a few nanoseconds instead of ~100 ns per Python call.
The accessor path is self-tested at import and switched off if torch's object
layout ever disagrees (the layout is checked first, against `Tensor._cdata`,
before any accessor is handed a pointer); the slow path uses only public
Python attributes. The state tensors' storage words (see "storage identity")
are located by the same self-test and read directly, or through the
accessors when it fails.
"""
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.dict cimport PyDict_GetItem
from libc.stdint cimport int64_t, int32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from cpython.exc cimport PyErr_Clear
from cpython.ref cimport Py_XINCREF, Py_XDECREF

cdef extern from *:
    """
    /* optimizer.state[p] without calling torch.Tensor.__hash__ (a Python
       function) every step: the hash, id(p), is computed once at build. */
    #if PY_VERSION_HEX < 0x030D0000
    #define fo_dict_get(d, k, h) _PyDict_GetItem_KnownHash((d), (k), (h))
    #else
    #define fo_dict_get(d, k, h) PyDict_GetItemWithError((d), (k))
    #endif
    """
    PyObject *fo_dict_get(PyObject *d, PyObject *k, Py_hash_t h)

cdef extern from *:
    """
    /* A dict's version tag (PEP 509): changes with every mutation of the
       dict, so an unchanged tag means unchanged entries (one load instead of
       a lookup per entry). Used where this was checked (CPython 3.11 and
       older); elsewhere FO_DICT_TAG is 0 and every entry is looked up. */
    #if PY_VERSION_HEX < 0x030C0000
    #define FO_HAVE_DICT_TAG 1
    #define FO_DICT_TAG(d) ((unsigned long long)((PyDictObject *)(d))->ma_version_tag)
    #else
    #define FO_HAVE_DICT_TAG 0
    #define FO_DICT_TAG(d) 0ULL
    #endif
    """
    const int FO_HAVE_DICT_TAG
    unsigned long long FO_DICT_TAG(PyObject *d)

cdef extern from *:
    """
    /* torch.Tensor.grad's C getter, called directly (no attribute lookup
       through the type's MRO): set once from the getset descriptor. */
    static PyGetSetDef *fo_grad_gs = NULL;
    static int fo_set_grad_getset(PyObject *d) {
        if (Py_TYPE(d) != &PyGetSetDescr_Type) return -1;
        PyGetSetDef *gs = ((PyGetSetDescrObject *)d)->d_getset;
        if (gs == NULL || gs->get == NULL) return -1;
        fo_grad_gs = gs;
        return 0;
    }
    static PyObject *fo_get_grad(PyObject *t) {  /* new reference, NULL on error */
        return fo_grad_gs->get(t, fo_grad_gs->closure);
    }
    """
    int fo_set_grad_getset(PyObject *d)
    object fo_get_grad(object t)

cdef extern from "kernels.h" nogil:
    enum:
        FO_DT_F32
        FO_DT_F64
        FO_DT_BF16
        FO_DT_F16
        FO_NUM_KINDS
        FO_WD_NONE
        FO_WD_COUPLED
        FO_WD_DECOUPLED
        FO_MOM_NONE
        FO_MOM_FIRST
        FO_MOM_UPDATE
        FO_ISA_BASELINE
        FO_ISA_AVX2
        FO_ISA_AVX512
        FO_UNIT
    ctypedef struct fo_tensor:
        void *param
        void *grad
        void *s0
        void *s1
        void *s2
        void *master
        void *step
        void *aux
        int64_t numel
        int32_t dtype
        int32_t sdtype
        int32_t step_f64
        int32_t aux_f64
        int32_t first
        int32_t sr
        int32_t index
    ctypedef struct fo_hparams:
        int32_t kind
        int32_t wd_mode
        int32_t amsgrad
        int32_t nesterov
        int32_t maximize
        int32_t centered
        int32_t bias_correction
        double lr, beta1, beta2, eps, weight_decay, momentum, dampening
        double alpha, lr_decay, momentum_decay, l1, max_grad_norm, clip_coef
        const float *grad_scale
        const float *found_inf
        uint64_t seed
        double grad_norm
    ctypedef struct fo_rtensor:
        const void *ptr
        int64_t numel
        int32_t dtype
    ctypedef struct fo_group:
        fo_hparams hp
        int64_t n
        fo_tensor *t
        int64_t *unit_off
        int64_t *blk_off
        double *partial
        fo_rtensor *norm_t
        void *norm_scratch
    ctypedef void (*fo_parallel_fn)(int64_t, int64_t, void *)
    ctypedef int32_t (*fo_parallel_for_t)(int64_t, int64_t, int64_t, fo_parallel_fn, void *)
    void fo_set_parallel_for(fo_parallel_for_t fn)
    int fo_has_parallel_for()
    int fo_cpu_supports(int isa)
    int fo_set_isa(int isa)
    int fo_get_isa()
    int fo_compiled_isas()
    int64_t fo_get_grain()
    void fo_set_grain(int64_t units)
    int64_t fo_group_finalize(fo_group *g)
    int fo_group_step(fo_group *g)
    void fo_roofline(float **rw, int nrw, float **ro, int nro, int64_t n)
    ctypedef struct fo_optimizer_decl:
        int32_t kind
        const char *name
        const char *keys
        const char *hparams
        int32_t cuda
    const fo_optimizer_decl fo_optimizers[]

ISA_NAMES = {"baseline": FO_ISA_BASELINE, "avx2": FO_ISA_AVX2, "avx512": FO_ISA_AVX512}
UNIT = FO_UNIT
# the shared constants (csrc/fusedoptim/declarations.h)
DT_F32, DT_F64, DT_BF16, DT_F16 = FO_DT_F32, FO_DT_F64, FO_DT_BF16, FO_DT_F16
WD_NONE, WD_COUPLED, WD_DECOUPLED = FO_WD_NONE, FO_WD_COUPLED, FO_WD_DECOUPLED
MOM_NONE, MOM_FIRST, MOM_UPDATE = FO_MOM_NONE, FO_MOM_FIRST, FO_MOM_UPDATE


def _declarations():
    """The optimizers' declarations (csrc/fusedoptim/declarations.h), by
    name: {"kind", "name", "keys", "hparams", "cuda"}, strings as declared
    (parsed by fusedoptim._base)."""
    cdef int i
    out = {}
    for i in range(FO_NUM_KINDS):
        d = &fo_optimizers[i]
        name = (<bytes>d.name).decode()
        out[name] = dict(kind=d.kind, name=name, keys=(<bytes>d.keys).decode(),
                         hparams=(<bytes>d.hparams).decode(), cuda=bool(d.cuda))
    return out


#: every optimizer's declaration, by its C name ("adam", "sgd", ...)
OPTIMIZERS = _declarations()
for _name, _d in OPTIMIZERS.items():
    globals()["KIND_" + _name.upper()] = _d["kind"]

# ---------------------------------------------------------------- ISA / pool --

def cpu_supports(str name):
    """True if this CPU can run the named instruction-set variant."""
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}; expected one of {sorted(ISA_NAMES)}")
    return bool(fo_cpu_supports(ISA_NAMES[name]))

def set_isa(str name):
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}; expected one of {sorted(ISA_NAMES)}")
    if fo_set_isa(ISA_NAMES[name]) != 0:
        raise RuntimeError(f"this CPU does not support the {name!r} kernels")

def get_isa():
    cdef int i = fo_get_isa()
    for k, v in ISA_NAMES.items():
        if v == i:
            return k

def compiled_isas():
    """Variants compiled into this extension (as the C code reports them)."""
    cdef int mask = fo_compiled_isas()
    return [k for k in ("avx512", "avx2", "baseline") if mask & (1 << ISA_NAMES[k])]

def set_parallel_for(uintptr_t addr):
    fo_set_parallel_for(<fo_parallel_for_t>addr)

def has_parallel_for():
    return bool(fo_has_parallel_for())

def get_grain():
    return fo_get_grain() * FO_UNIT

def set_grain(int64_t elements):
    fo_set_grain((elements + FO_UNIT - 1) // FO_UNIT)

# ------------------------------------------------------ fast tensor metadata --

ctypedef void *AtenTensorHandle
ctypedef int32_t (*get_ptr_t)(AtenTensorHandle, void **) nogil
ctypedef int32_t (*get_i64_t)(AtenTensorHandle, int64_t *) nogil
ctypedef int32_t (*get_i64p_t)(AtenTensorHandle, int64_t **) nogil
ctypedef int32_t (*get_i32_t)(AtenTensorHandle, int32_t *) nogil

cdef get_ptr_t a_data_ptr = NULL
cdef get_i64_t a_dim = NULL
cdef get_i64p_t a_sizes = NULL
cdef get_i64p_t a_strides = NULL
cdef get_i32_t a_dtype = NULL
cdef get_i32_t a_device = NULL
cdef bint fast_meta_on = False
cdef object TensorType = None
cdef object ParameterType = None

ctypedef struct Meta:
    void *ptr
    int64_t dim
    int64_t *sizes
    int64_t *strides
    int32_t dtype                    # c10::ScalarType code
    int32_t device                   # c10::DeviceType code

cdef inline bint fast_meta(object t, Meta *m) noexcept:
    """Metadata of an exact torch.Tensor / nn.Parameter through the AOTI shim.
    A THPVariable holds its at::Tensor right after the PyObject header, and an
    AtenTensorHandle is an at::Tensor*. Returns False if anything fails."""
    cdef type tp = type(t)
    if tp is not TensorType and tp is not ParameterType:
        return False
    cdef AtenTensorHandle h = <AtenTensorHandle>(<char *><PyObject *>t + sizeof(PyObject))
    # no layout query: a sparse or other non-strided tensor has no data pointer,
    # so a_data_ptr fails for it and the caller takes the slow path
    if (a_data_ptr(h, &m.ptr) | a_dim(h, &m.dim) | a_sizes(h, &m.sizes) |
            a_strides(h, &m.strides) | a_dtype(h, &m.dtype) | a_device(h, &m.device)) != 0:
        return False
    return True

cdef inline bint _same(const int64_t *a, const int64_t *b, int64_t n) noexcept nogil:
    cdef int64_t k
    for k in range(n):
        if a[k] != b[k]:
            return False
    return True

cdef inline bint fast_ptr(object t, void **ptr) noexcept:
    cdef type tp = type(t)
    if tp is not TensorType and tp is not ParameterType:
        return False
    return a_data_ptr(<AtenTensorHandle>(<char *><PyObject *>t + sizeof(PyObject)), ptr) == 0

def set_tensor_accessors(uintptr_t data_ptr, uintptr_t dim, uintptr_t sizes, uintptr_t strides,
                         uintptr_t dtype, uintptr_t device, tensor_type, parameter_type):
    global a_data_ptr, a_dim, a_sizes, a_strides, a_dtype, a_device, TensorType, ParameterType
    a_data_ptr = <get_ptr_t>data_ptr
    a_dim = <get_i64_t>dim
    a_sizes = <get_i64p_t>sizes
    a_strides = <get_i64p_t>strides
    a_dtype = <get_i32_t>dtype
    a_device = <get_i32_t>device
    TensorType = tensor_type
    ParameterType = parameter_type

def fast_meta_layout_ok(t):
    """True if the word after t's PyObject header is t's TensorImpl pointer
    (what torch reports as `t._cdata`), i.e. a THPVariable still starts with
    its at::Tensor (= an AtenTensorHandle). Reads only memory inside the
    Python object (its type's basic size is checked first) and calls nothing
    of torch's: the import-time self-test runs it before any accessor."""
    cdef type tp = type(t)
    if tp is not TensorType and tp is not ParameterType:
        return False
    if tp.__basicsize__ < <Py_ssize_t>(sizeof(PyObject) + sizeof(void *)):
        return False
    cdef uintptr_t word = (<uintptr_t *>(<char *><PyObject *>t + sizeof(PyObject)))[0]
    return word != 0 and word == <uintptr_t>t._cdata

# -------------------------------------------- state tensors' storage identity --
# Whether a state tensor still has the memory the plan points at is checked
# every step, for every state tensor: through the AOTI accessor that costs
# ~30 ns a tensor (a W3 step has 6,000), so when the import-time self-test
# (fusedoptim._backend) locates them, three words are read directly: the
# TensorImpl's StorageImpl pointer, the StorageImpl's data pointer, and the
# TensorImpl's storage offset and numel. `.data = ...`, `set_()`,
# `share_memory_()`, `resize_()` all change one of them.
cdef Py_ssize_t RAW_S = -1   # TensorImpl: StorageImpl *
cdef Py_ssize_t RAW_D = -1   # StorageImpl: data pointer
cdef Py_ssize_t RAW_O = -1   # TensorImpl: storage offset (elements)
cdef Py_ssize_t RAW_N = -1   # TensorImpl: numel
cdef bint grad_fast = False

cdef inline char *_impl(PyObject *t) noexcept:
    return (<char **>(<char *>t + sizeof(PyObject)))[0]

cdef inline uintptr_t _word(const char *base, Py_ssize_t off) noexcept:
    return (<const uintptr_t *>(base + off))[0]

cdef inline bint raw_fp(PyObject *t, uintptr_t *fp) noexcept:
    """The storage fingerprint of an exact torch.Tensor / nn.Parameter."""
    cdef PyObject *tp = <PyObject *>t.ob_type
    if RAW_S < 0 or (tp != <PyObject *>TensorType and tp != <PyObject *>ParameterType):
        return False
    cdef char *impl = _impl(t)
    cdef char *st = <char *>_word(impl, RAW_S)
    fp[0] = <uintptr_t>st
    fp[1] = _word(st, RAW_D) if st != NULL else 0
    fp[2] = _word(impl, RAW_O)
    fp[3] = _word(impl, RAW_N)
    return True

cdef int _fingerprint(object t, uintptr_t *fp) except -1:
    """1 if fp is the raw fingerprint, 0 if it is (data_ptr, numel) through the public API."""
    if raw_fp(<PyObject *>t, fp):
        return 1
    fp[0] = <uintptr_t>t.data_ptr()
    fp[1] = 0
    fp[2] = 0
    fp[3] = <uintptr_t>t.numel()
    return 0

def _scan(list bases, list want, Py_ssize_t limit):
    """The unique word offset below `limit` at which every base address holds
    its wanted value, or -1."""
    cdef Py_ssize_t o, found = -1, k
    cdef bint ok
    for o in range(0, limit, sizeof(uintptr_t)):
        ok = True
        for k in range(len(bases)):
            if _word(<char *><uintptr_t>bases[k], o) != <uintptr_t>want[k]:
                ok = False
                break
        if ok:
            if found >= 0:
                return -1
            found = o
    return found

def raw_storage_scan(list probes):
    """Locate the storage words in torch's objects from public values
    (`_cdata` of the tensor and of its untyped storage, `data_ptr()`,
    `storage_offset()`, `numel()`) of distinct probes; reads only inside
    objects whose layout `fast_meta_layout_ok` confirmed, within the first
    0xa0 bytes of a TensorImpl and 0x38 of a StorageImpl (both are larger).
    -> (storage, data, offset, numel) offsets or None."""
    for t in probes:
        if not fast_meta_layout_ok(t):
            return None
    impls = [t._cdata for t in probes]
    stors = [t.untyped_storage()._cdata for t in probes]
    o_s = _scan(impls, stors, 0xa0)
    o_d = _scan(stors, [t.untyped_storage().data_ptr() for t in probes], 0x38)
    o_o = _scan(impls, [t.storage_offset() for t in probes], 0xa0)
    o_n = _scan(impls, [t.numel() for t in probes], 0xa0)
    if min(o_s, o_d, o_o, o_n) < 0:
        return None
    return o_s, o_d, o_o, o_n

def set_raw_storage(offsets):
    """Enable the raw storage fingerprint (offsets from raw_storage_scan) or
    disable it (None)."""
    global RAW_S, RAW_D, RAW_O, RAW_N
    if offsets is None:
        RAW_S = RAW_D = RAW_O = RAW_N = -1
    else:
        RAW_S, RAW_D, RAW_O, RAW_N = offsets

def raw_fingerprint(t):
    """(storage, data, offset, numel) words of t through the raw path, or None."""
    cdef uintptr_t fp[4]
    if not raw_fp(<PyObject *>t, fp):
        return None
    return (fp[0], fp[1], fp[2], fp[3])

def set_grad_getter(descr, tensor):
    """Use torch.Tensor.grad's C getter directly if `descr` is its getset
    descriptor and it agrees with the attribute on `tensor`."""
    global grad_fast
    grad_fast = False
    if fo_set_grad_getset(<PyObject *>descr) != 0:
        return False
    grad_fast = fo_get_grad(tensor) is tensor.grad
    return grad_fast

def fast_meta_probe(t):
    """(data_ptr, sizes, strides, dtype code, device code) through the fast path,
    or None; used by the import-time self-test."""
    cdef Meta m
    if a_data_ptr == NULL or not fast_meta(t, &m):
        return None
    return (<uintptr_t>m.ptr, tuple(m.sizes[i] for i in range(m.dim)),
            tuple(m.strides[i] for i in range(m.dim)), m.dtype, m.device)

def enable_fast_meta(bint on):
    global fast_meta_on
    fast_meta_on = on and a_data_ptr != NULL

def fast_meta_enabled():
    return fast_meta_on

# ------------------------------------------------------------------- plans --

ctypedef struct PMeta:              # a plan param's metadata, cached at build
    int64_t dim
    int64_t *shape                   # dim sizes, then dim strides (malloc'ed)
    int32_t dtype
    int32_t device

ctypedef struct StateRef:
    PyObject *dict               # the param's state dict (borrowed; kept alive by state_refs)
    unsigned long long tag       # its version tag when its entries were last found as built (0: never)
    PyObject *param              # its key in optimizer.state (borrowed; kept alive by params)
    Py_hash_t hash               # hash(param), computed once
    int nkeys
    PyObject *keys[8]
    PyObject *vals[8]
    uintptr_t fp[8][4]           # each state tensor's storage fingerprint when built
    char raw[8]                  # ... read raw (1) or through data_ptr()/numel() (0)

cdef inline uintptr_t _ptr(t) except? 0:
    return 0 if t is None else <uintptr_t>t.data_ptr()

cdef object _F64 = None
cdef dict _DT = {}

def _init_dtypes(torch):
    global _F64, _DT
    _F64 = torch.float64
    _DT = dtype_codes(torch)


def dtype_codes(torch):
    """torch dtype -> the kernels' storage code (FO_DT_*)."""
    return {torch.float32: FO_DT_F32, torch.float64: FO_DT_F64,
            torch.bfloat16: FO_DT_BF16, torch.float16: FO_DT_F16}

cdef int32_t _dt_code(dt) except -1:
    cdef object c = _DT.get(dt)
    if c is None:
        raise TypeError(f"fusedoptim: no kernel for dtype {dt}")
    return <int32_t>c

cdef class Plan:
    """The cached native description of one parameter group: pointers to every
    param and state tensor, the chunk offsets, and the hyper-parameters. Built
    once (slow path, Python), then refreshed each step by `load_grads`."""
    cdef fo_group g
    cdef readonly tuple params_all   # group['params'] when built
    cdef readonly list params        # the params this plan updates, in order
    cdef readonly list state_refs    # per plan tensor: (state dict, (key, tensor), ...)
    cdef readonly object state_obj   # optimizer.state object when built
    cdef readonly object key         # structural key (options that shape the plan)
    cdef int32_t *slot               # per params_all entry: plan index or -1 (fallback) or -2 (no grad)
    cdef StateRef *sref              # per plan index: state identity to re-check each step
    cdef PMeta *pmeta                # per plan index: param metadata (fast path)
    cdef readonly list relayout      # indices whose grad needs a copy this step
    cdef public list scratch         # per plan index: scratch grad buffer or None
    cdef public object group         # the param_group dict this plan serves
    cdef readonly list fallback      # params_all entries served by torch's path
    cdef Py_ssize_t nraw             # state tensors fingerprinted raw (see _raw_same)
    cdef PyObject **raw_obj          # ... each tensor (borrowed: state_refs holds it)
    cdef uintptr_t *raw_fp           # ... its fingerprint when built (4 words)
    cdef uintptr_t *raw_work         # ... scratch of _raw_same
    cdef PyObject **held             # per plan index: the grad of this step (a reference), held while the kernel runs
    cdef bint state_is_dict          # optimizer.state is a dict (the C lookup applies)
    cdef unsigned long long state_tag  # optimizer.state's version tag when last found as built (0: never)

    def __cinit__(self, int kind, tuple params_all, object key, object state_obj):
        cdef Py_ssize_t na = len(params_all)
        self.g.hp.kind = kind
        self.params_all = params_all
        self.key = key
        self.state_obj = state_obj
        self.params = []
        self.state_refs = []
        self.relayout = []
        self.scratch = []
        self.fallback = []
        self.state_is_dict = isinstance(state_obj, dict)
        self.slot = <int32_t *>calloc(na + 1, sizeof(int32_t))
        self.g.t = <fo_tensor *>calloc(na + 1, sizeof(fo_tensor))
        self.g.unit_off = <int64_t *>calloc(na + 2, sizeof(int64_t))
        self.g.blk_off = <int64_t *>calloc(na + 2, sizeof(int64_t))
        self.g.partial = NULL
        self.g.norm_t = <fo_rtensor *>calloc(na + 1, sizeof(fo_rtensor))
        self.g.norm_scratch = NULL
        self.sref = <StateRef *>calloc(na + 1, sizeof(StateRef))
        self.held = <PyObject **>calloc(na + 1, sizeof(PyObject *))
        self.pmeta = <PMeta *>calloc(na + 1, sizeof(PMeta))
        if self.held == NULL or self.g.norm_t == NULL or self.pmeta == NULL or self.slot == NULL or self.g.t == NULL or self.g.unit_off == NULL or self.sref == NULL or self.g.blk_off == NULL:
            raise MemoryError()
        self.g.n = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.held != NULL:
            self.release_grads()
            free(self.held)
        free(self.raw_obj)
        free(self.raw_fp)
        free(self.raw_work)
        if self.pmeta != NULL:
            for i in range(self.g.n):
                free(self.pmeta[i].shape)
        free(self.pmeta)
        free(self.slot)
        free(self.sref)
        free(self.g.t)
        free(self.g.unit_off)
        free(self.g.blk_off)
        free(self.g.partial)
        free(self.g.norm_t)
        free(self.g.norm_scratch)

    def mark(self, Py_ssize_t j, int32_t how):
        """Entry j of params_all: -2 = no grad, -1 = served by the fallback."""
        self.slot[j] = how
        if how == -1:
            self.fallback.append(self.params_all[j])

    def add(self, Py_ssize_t j, p, s0, s1, s2, step, bint first, tuple state_ref,
            master=None, aux=None, bint sr=False):
        """Entry j of params_all is updated natively, with these state tensors
        (s0..s2 per optimizer, all of one dtype), optional float32 master
        weights, NAdam's mu_product scalar `aux`, and stochastic rounding."""
        cdef Py_ssize_t i = self.g.n, k
        cdef fo_tensor *t = &self.g.t[i]
        t.param = <void *>_ptr(p)
        t.s0 = <void *>_ptr(s0)
        t.s1 = <void *>_ptr(s1)
        t.s2 = <void *>_ptr(s2)
        t.master = <void *>_ptr(master)
        t.step = <void *>_ptr(step)
        t.aux = <void *>_ptr(aux)
        t.step_f64 = step is not None and step.dtype == _F64
        t.aux_f64 = aux is not None and aux.dtype == _F64
        t.numel = p.numel()
        t.dtype = _dt_code(p.dtype)
        t.sdtype = t.dtype if s0 is None else _dt_code(s0.dtype)
        t.first = first
        t.sr = sr
        t.index = <int32_t>i
        if len(state_ref) > 9:
            raise ValueError("at most 8 state tensors per param")
        cdef StateRef *r = &self.sref[i]
        r.dict = <PyObject *>state_ref[0] if state_ref else NULL
        r.param = <PyObject *>p
        r.hash = hash(p)
        r.nkeys = len(state_ref) - 1 if state_ref else 0
        for k in range(r.nkeys):
            r.keys[k] = <PyObject *>state_ref[k + 1][0]
            r.vals[k] = <PyObject *>state_ref[k + 1][1]
            r.raw[k] = _fingerprint(state_ref[k + 1][1], r.fp[k])
        cdef Meta m
        cdef PMeta *pm = &self.pmeta[i]
        if fast_meta_on and fast_meta(p, &m):
            pm.dim = m.dim
            pm.dtype = m.dtype
            pm.device = m.device
            pm.shape = <int64_t *>calloc(2 * m.dim + 1, sizeof(int64_t))
            if pm.shape == NULL:
                raise MemoryError()
            for k in range(m.dim):
                pm.shape[k] = m.sizes[k]
                pm.shape[m.dim + k] = m.strides[k]
        else:
            pm.dim = -1  # no fast path for this param
        self.slot[j] = i
        self.params.append(p)
        self.state_refs.append(state_ref)
        self.scratch.append(None)
        self.g.n += 1

    def finalize(self):
        cdef Py_ssize_t i, k, m = 0
        for i in range(self.g.n):
            for k in range(self.sref[i].nkeys):
                m += self.sref[i].raw[k]
        free(self.raw_obj)
        free(self.raw_fp)
        free(self.raw_work)
        self.nraw = 0
        self.raw_obj = <PyObject **>calloc(m + 1, sizeof(PyObject *))
        self.raw_fp = <uintptr_t *>calloc(4 * m + 4, sizeof(uintptr_t))
        self.raw_work = <uintptr_t *>calloc(m + 1, sizeof(uintptr_t))
        if self.raw_obj == NULL or self.raw_fp == NULL or self.raw_work == NULL:
            raise MemoryError()
        m = 0
        for i in range(self.g.n):
            for k in range(self.sref[i].nkeys):
                if self.sref[i].raw[k]:
                    self.raw_obj[m] = self.sref[i].vals[k]
                    for j in range(4):
                        self.raw_fp[4 * m + j] = self.sref[i].fp[k][j]
                    m += 1
        self.nraw = m
        cdef int64_t blocks = fo_group_finalize(&self.g)
        free(self.g.partial)
        self.g.partial = <double *>calloc(2 * blocks + 2, sizeof(double))
        free(self.g.norm_scratch)
        self.g.norm_scratch = calloc(fo_norm_scratch_size(self.g.norm_t, self.g.n) + 8, 1)
        if self.g.partial == NULL or self.g.norm_scratch == NULL:
            raise MemoryError()

    def set_hparams(self, int wd_mode, bint amsgrad, bint nesterov, bint maximize, double lr,
                    double beta1, double beta2, double eps, double weight_decay,
                    double momentum, double dampening, double alpha=0.0, double lr_decay=0.0,
                    double momentum_decay=0.0, double l1=0.0, double max_grad_norm=0.0,
                    bint centered=False, bint bias_correction=True):
        self.g.hp.wd_mode = wd_mode
        self.g.hp.amsgrad = amsgrad
        self.g.hp.nesterov = nesterov
        self.g.hp.maximize = maximize
        self.g.hp.lr = lr
        self.g.hp.beta1 = beta1
        self.g.hp.beta2 = beta2
        self.g.hp.eps = eps
        self.g.hp.weight_decay = weight_decay
        self.g.hp.momentum = momentum
        self.g.hp.dampening = dampening
        self.g.hp.alpha = alpha
        self.g.hp.lr_decay = lr_decay
        self.g.hp.momentum_decay = momentum_decay
        self.g.hp.l1 = l1
        self.g.hp.max_grad_norm = max_grad_norm
        self.g.hp.clip_coef = 1.0
        self.g.hp.centered = centered
        self.g.hp.bias_correction = bias_correction

    def set_amp(self, grad_scale, found_inf):
        """GradScaler's tensors (contiguous CPU float32 scalars, checked by
        the caller) or None: kept alive by the caller for the step."""
        self.g.hp.grad_scale = <const float *><uintptr_t>(0 if grad_scale is None else grad_scale.data_ptr())
        self.g.hp.found_inf = <const float *><uintptr_t>(0 if found_inf is None else found_inf.data_ptr())

    def set_clip_coef(self, double coef):
        """Clip by a coefficient the caller computed (a group whose norm spans
        params the kernels do not serve) instead of the kernel's own norm."""
        self.g.hp.max_grad_norm = 0.0
        self.g.hp.clip_coef = coef

    def set_seed(self, uint64_t seed):
        self.g.hp.seed = seed

    @property
    def grad_norm(self):
        """The group's grad norm of the last step (when max_grad_norm is set)."""
        return self.g.hp.grad_norm

    @property
    def n(self):
        return self.g.n

    @property
    def numel(self):
        return self.g.unit_off[self.g.n] * FO_UNIT

    def set_grad(self, Py_ssize_t i, g):
        self._hold(i, <PyObject *>g)
        self.g.t[i].grad = <void *>_ptr(g)

    cdef inline void _hold(self, Py_ssize_t i, PyObject *g) noexcept:
        cdef PyObject *old = self.held[i]
        Py_XINCREF(g)
        self.held[i] = g
        Py_XDECREF(old)

    cdef bint _state_same(self, StateRef *r, bint state_same) noexcept:
        """r's state is still what the plan points at: optimizer.state[p] is
        the very dict of the build (identity, not a refcount: a caller may
        hold the old dict), each state key still maps to the same tensor,
        and each tensor still has its data pointer (`.data = ...`, `set_()`,
        `share_memory_()` or a growing `resize_()` move it)."""
        cdef PyObject *cur
        cdef uintptr_t fp[4]
        cdef Py_ssize_t k
        cdef bint same
        if r.dict == NULL:
            return True
        if state_same:
            pass  # optimizer.state not mutated since every state[p] was found as built
        elif self.state_is_dict:
            cur = fo_dict_get(<PyObject *>self.state_obj, r.param, r.hash)
            if cur == NULL:
                PyErr_Clear()
                return False
            if cur != r.dict:
                return False
        else:
            try:
                obj = self.state_obj.get(<object>r.param)
            except Exception:
                return False
            cur = <PyObject *>obj
            if cur != r.dict:
                return False
        same = FO_HAVE_DICT_TAG and FO_DICT_TAG(r.dict) == r.tag
        for k in range(r.nkeys):
            cur = r.vals[k]
            if not same:
                cur = PyDict_GetItem(<object>r.dict, <object>r.keys[k])
                if cur != r.vals[k]:
                    return False
            if r.raw[k]:
                continue  # checked by _raw_same, for every tensor at once
            try:
                if _fingerprint(<object>cur, fp) != 0 or fp[0] != r.fp[k][0] or fp[3] != r.fp[k][3]:
                    return False
            except Exception:
                return False
        if not same:
            r.tag = FO_DICT_TAG(r.dict)
        return True

    cdef bint _raw_same(self) noexcept:
        """Every raw-fingerprinted state tensor still has its storage: the
        same StorageImpl, data pointer, storage offset and numel. Three passes
        over the flat table, each of independent loads (the objects are
        scattered in memory: the loads of one pass overlap instead of
        chaining per tensor)."""
        cdef Py_ssize_t m, nr = self.nraw
        cdef uintptr_t *fp = self.raw_fp
        cdef uintptr_t *w = self.raw_work
        if nr == 0:
            return True
        if RAW_S < 0:
            return False  # switched off since the build: rebuild through the public API
        for m in range(nr):
            w[m] = <uintptr_t>_impl(self.raw_obj[m])
        for m in range(nr):
            if _word(<char *>w[m], RAW_O) != fp[4 * m + 2] or _word(<char *>w[m], RAW_N) != fp[4 * m + 3]:
                return False
            w[m] = _word(<char *>w[m], RAW_S)
            if w[m] != fp[4 * m]:
                return False
        for m in range(nr):
            if w[m] != 0 and _word(<char *>w[m], RAW_D) != fp[4 * m + 1]:
                return False
        return True

    def load_grads(self, list params, object state_obj):
        """Per-step refresh. Returns False if the plan no longer describes the
        group (params, grads present, state replaced, param storage changed):
        the caller rebuilds it, and the rebuild's checks raise the clear error
        for a bad grad (shape, dtype, device, sparse). Changes nothing. Fills self.relayout with the indices whose grad layout differs from
        the param's (the caller copies those into scratch buffers)."""
        cdef Py_ssize_t na = PyList_GET_SIZE(params), j, i, k
        cdef object p, g
        cdef Meta mp, mg
        cdef fo_tensor *t
        cdef StateRef *r
        cdef PMeta *pm
        if na != PyTuple_GET_SIZE(self.params_all) or state_obj is not self.state_obj:
            return False
        if self.relayout:
            self.relayout = []
        if not self._raw_same():
            return False
        cdef bint state_same = (FO_HAVE_DICT_TAG and self.state_is_dict and
                                FO_DICT_TAG(<PyObject *>state_obj) == self.state_tag)
        for j in range(na):
            p = <object>PyList_GET_ITEM(params, j)
            if <PyObject *>p is not PyTuple_GET_ITEM(self.params_all, j):
                return False
            if grad_fast and (type(p) is TensorType or type(p) is ParameterType):
                g = fo_get_grad(p)
            else:
                g = p.grad
            i = self.slot[j]
            if g is None:
                if i != -2:
                    return False
                continue
            if i == -2:
                return False
            if i == -1:
                continue
            t = &self.g.t[i]
            r = &self.sref[i]
            if not self._state_same(r, state_same):
                return False
            # held until the step ends: another thread's zero_grad() or
            # `p.grad = ...` cannot free it while the GIL is released
            self._hold(i, <PyObject *>g)
            pm = &self.pmeta[i]
            if pm.dim >= 0 and fast_ptr(p, &mp.ptr) and fast_meta(g, &mg):
                # the param's storage and metadata are as built (else: rebuild,
                # which re-validates everything through the public accessors)
                if mp.ptr != t.param:
                    return False
                if mg.device != pm.device or mg.dtype != pm.dtype or mg.dim != pm.dim or \
                        not _same(mg.sizes, pm.shape, pm.dim):
                    return False
                if t.numel > 1 and not _same(mg.strides, pm.shape + pm.dim, pm.dim):
                    self.relayout.append(i)
                else:
                    t.grad = mg.ptr
            else:
                if <uintptr_t>p.data_ptr() != <uintptr_t>t.param or p.numel() != t.numel:
                    return False
                if g.is_sparse or g.device != p.device or g.dtype != p.dtype or g.shape != p.shape:
                    return False
                if t.numel > 1 and g.stride() != p.stride():
                    self.relayout.append(i)
                else:
                    t.grad = <void *><uintptr_t>g.data_ptr()
        if FO_HAVE_DICT_TAG and self.state_is_dict:
            self.state_tag = FO_DICT_TAG(<PyObject *>state_obj)  # every state[p] found as built
        return True

    def run(self):
        """One fused step over the whole group, with the GIL released (the
        grads of this step, and the params and state, are held by the plan
        meanwhile). Returns True if AMP's found_inf made it skip. Raises
        RuntimeError if torch's thread pool reports an error."""
        cdef int rc
        with nogil:
            rc = fo_group_step(&self.g)
        self.release_grads()
        if rc < 0:
            raise RuntimeError(
                f"fusedoptim: torch_parallel_for failed (error {rc}); the step is incomplete")
        return rc != 0

    def release_grads(self):
        """Drop the plan's references to this step's grads (zero_grad frees them)."""
        cdef Py_ssize_t i
        cdef PyObject *g
        for i in range(self.g.n):
            g = self.held[i]
            if g != NULL:
                self.held[i] = NULL
                Py_XDECREF(g)

def roofline(list rw, list ro):
    """Same-traffic roofline kernel: reads every array once and writes the rw
    ones in place with trivial arithmetic, on the same pool and split as the
    optimizer kernels. All arrays: contiguous float32 CPU tensors of one size."""
    cdef int nrw = len(rw), nro = len(ro), i
    cdef float *w[8]
    cdef float *r[8]
    if nrw < 1 or nrw > 8 or nro > 8:
        raise ValueError("roofline takes 1..8 read-write and 0..8 read-only arrays")
    n = rw[0].numel()
    for i, t in enumerate(rw + ro):
        if t.numel() != n or not t.is_contiguous() or str(t.dtype) != "torch.float32" or t.device.type != "cpu":
            raise ValueError("roofline arrays must be contiguous float32 CPU tensors of equal size")
    for i in range(nrw):
        w[i] = <float *><uintptr_t>rw[i].data_ptr()
    for i in range(nro):
        r[i] = <float *><uintptr_t>ro[i].data_ptr()
    cdef int64_t nn = n
    with nogil:
        fo_roofline(w, nrw, r, nro, nn)
    _check_pool()
include "_reduce.pxi"
