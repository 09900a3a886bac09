#!/usr/bin/env bash
# The main job on built-in defaults: install, then export Mobile-Former-294M to Core ML with
# calibrated int8 (W8A8), checked against PyTorch on Linux by edge's MIL interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/edge-export mobileformer-294m --target coreml --int8 --out out "$@"
