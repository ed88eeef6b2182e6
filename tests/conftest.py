"""Shared pytest configuration for fusedoptim's tests.

Markers:
    slow   long-running tests (e.g. ~1M-element parity); skipped unless
           `--runslow` is given or FUSEDOPTIM_SLOW=1 is set.
    beyond_isa_subset
           registry cases outside the per-ISA parity subset (tests/registry.py);
           `-m "not beyond_isa_subset"` leaves them out, and so does
           FUSEDOPTIM_PARITY_SUBSET=isa (the CI's per-ISA wheel runs).

Every test starts from a fixed seed and gets the kernel variant (ISA) and
torch's thread count restored afterwards, so tests that switch them cannot
leak into others.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # `import registry` from any rootdir


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (run with --runslow or FUSEDOPTIM_SLOW=1)")
    config.addinivalue_line(
        "markers", "beyond_isa_subset: outside the per-ISA parity subset (deselected by FUSEDOPTIM_PARITY_SUBSET=isa)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FUSEDOPTIM_PARITY_SUBSET", "") == "isa":
        # the per-ISA subset: as -m "not beyond_isa_subset"
        out = [it for it in items if "beyond_isa_subset" in it.keywords]
        if out:
            config.hook.pytest_deselected(items=out)
            items[:] = [it for it in items if "beyond_isa_subset" not in it.keywords]
    if config.getoption("--runslow") or os.environ.get("FUSEDOPTIM_SLOW") == "1":
        return
    markexpr = getattr(config.option, "markexpr", "") or ""
    if "slow" in markexpr and "not slow" not in markexpr:
        return  # `-m slow` asks for them explicitly
    skip = pytest.mark.skip(reason="slow: use --runslow or FUSEDOPTIM_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    try:
        import fusedoptim

        isa = fusedoptim._C.get_isa()
    except Exception as e:  # pragma: no cover - import broken
        isa = f"<import failed: {e}>"
    return (
        f"fusedoptim isa={isa}, torch {torch.__version__} cpu capability="
        f"{torch.backends.cpu.get_cpu_capability()}, threads={torch.get_num_threads()}"
    )


@pytest.fixture(autouse=True)
def _seed_and_restore():
    import fusedoptim

    torch.manual_seed(0)
    isa = fusedoptim._C.get_isa()
    threads = torch.get_num_threads()
    default_dtype = torch.get_default_dtype()
    yield
    if fusedoptim._C.get_isa() != isa:
        fusedoptim._C.set_isa(isa)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_default_dtype() != default_dtype:
        torch.set_default_dtype(default_dtype)
