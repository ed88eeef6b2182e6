"""One version, from one place: src/fusedoptim/_version.py is read by the build
(pyproject.toml: [tool.setuptools.dynamic]) into the distribution's metadata, so
an installed fusedoptim reports the version its wheel was published under.

When fusedoptim is imported from a source tree (PYTHONPATH=src) there is no
metadata of its own to compare with: the test skips, unless
FUSEDOPTIM_EXPECT_INSTALLED=1 (set by the release check and the wheel builds),
where that is a failure."""
import importlib.metadata as md
import os
import re

import pytest

import fusedoptim

# PEP 440 public version (what PyPI accepts), without local segment.
_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def _installed_dist():
    """The distribution whose files include the imported fusedoptim, or None."""
    try:
        dist = md.distribution("fusedoptim")
    except md.PackageNotFoundError:
        return None
    init = os.path.realpath(str(dist.locate_file("fusedoptim/__init__.py")))
    return dist if init == os.path.realpath(fusedoptim.__file__) else None


def test_version_is_a_pep440_release_string():
    assert isinstance(fusedoptim.__version__, str)
    assert _PEP440.match(fusedoptim.__version__), fusedoptim.__version__


def test_version_matches_installed_metadata():
    dist = _installed_dist()
    if dist is None:
        msg = f"fusedoptim imported from {fusedoptim.__file__}, not from an installed distribution"
        if os.environ.get("FUSEDOPTIM_EXPECT_INSTALLED") == "1":
            pytest.fail(msg + " (FUSEDOPTIM_EXPECT_INSTALLED=1)")
        pytest.skip(msg)
    assert fusedoptim.__version__ == dist.version == md.version("fusedoptim")
