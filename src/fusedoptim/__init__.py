"""fusedoptim: fused C optimizer kernels behind a drop-in torch.optim API.

    import fusedoptim as optim      # instead of: import torch.optim as optim

Every name of torch.optim is importable from here. SGD, Adam, AdamW, Adagrad,
RMSprop, Adamax, NAdam, RAdam, Adadelta, and Lion, LAMB and ADOPT (which torch lacks)
run on fused CPU kernels: one native call per parameter group per step, on
torch's thread pool, bit-identical to torch's fused CPU kernels in float32
where torch has one (SGD, Adam, AdamW, Adagrad). SparseAdam, LBFGS and ASGD
are torch's own classes.
"""
import importlib as _importlib

import torch.optim as _torch_optim
from torch.optim import *  # noqa: F401,F403  (every name a torch.optim user imports)
from torch.optim import Optimizer  # noqa: F401

from . import _backend  # wires the C extension to torch at import
from ._config import show_config
from ._version import __version__
from .optimizers import ALL as _ALL
from .optimizers import ADOPT, LAMB, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RAdam, RMSprop  # noqa: F401

globals().update({_cls.__name__: _cls for _cls in _ALL})  # every fused optimizer, by its name

# `from torch.optim import *` bound `lr_scheduler` to torch's module; replace it
# with fusedoptim's own (a superset with identical behaviour for torch's names).
lr_scheduler = _importlib.import_module(".lr_scheduler", __name__)
from .recipes import EarlyStopping, lr_range_test, param_groups, scale_lr  # noqa: E402
from .clip import clip_grad_norm_, clip_grads_with_norm_, get_total_norm  # noqa: E402,F401
from .factory import create_optimizer  # noqa: E402

for _name in ("swa_utils",):
    if hasattr(_torch_optim, _name):
        globals()[_name] = getattr(_torch_optim, _name)

select_isa = _backend.select_isa

__all__ = sorted(
    set(getattr(_torch_optim, "__all__", []))
    | {_cls.__name__ for _cls in _ALL}
    | {"Optimizer", "lr_scheduler", "show_config", "select_isa", "__version__",
       "EarlyStopping", "lr_range_test", "param_groups", "scale_lr", "clip_grad_norm_",
       "clip_grads_with_norm_", "get_total_norm", "create_optimizer"}
)
