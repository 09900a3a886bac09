#!/usr/bin/env bash
# Install everything (Python toolchain and the system tools the tests drive), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system-tools.sh
# Two workers: most of the suite's time is single-threaded converter Python, so a second worker on a 2-core
# runner cut the suite from 15.8 to 12.7 min. More workers than that each start PyTorch's own thread pool.
exec .venv/bin/python -m pytest -q -n "${EDGE_TEST_WORKERS:-2}" "$@"
