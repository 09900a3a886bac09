#!/usr/bin/env bash
# The main job on built-in defaults: install, then export EfficientFormer-L1 to Core ML with calibrated int8
# (W8A8), checked against PyTorch on Linux by edge's MIL interpreter. The headline model, Mobile-Former-294M,
# runs the same command but its random-init weights lose too much at int8 for the gate (README, "Two commands").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/edge-export efficientformer-l1 --target coreml --int8 --out out "$@"
