#!/usr/bin/env bash
# Install fusedoptim with its test extras on top of torch's CPU build, then run
# the test suite. This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q ".[test,plot]"
python -m pytest -q -p no:cacheprovider tests
