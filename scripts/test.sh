#!/usr/bin/env bash
# Install everything (Python toolchain and the system tools the tests drive), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system-tools.sh
exec .venv/bin/python -m pytest -q "$@"
