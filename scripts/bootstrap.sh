#!/usr/bin/env bash
# Create .venv and install edge with its pinned toolchain. Idempotent: a second run reuses the
# environment and reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${EDGE_VENV:-.venv}
STAMP="$VENV/.edge-installed"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "[bootstrap] $VENV is up to date"
  exit 0
fi
pipi() { "$VENV/bin/pip" install --disable-pip-version-check -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
echo "[bootstrap] installing the pinned toolchain (first run: a few minutes)"
# torch first and exact: a looser request lets pip choose a multi-GB CUDA build.
pipi torch==2.13.0
pipi -e ".[test]"
# timm is a test-only reference implementation. --no-deps keeps torchvision out: PyPI's torchvision
# cannot be imported beside the CPU torch wheel (tests/reference.py explains the stand-in).
pipi --no-deps timm==1.0.31
pipi pyyaml huggingface_hub
"$VENV/bin/python" - <<'PY'
import sys, torch
if torch.version.cuda is not None:
    sys.exit(f"[bootstrap] error: a CUDA build of torch was installed ({torch.__version__}); remove .venv and rerun")
import coremltools, onnxruntime, litert_torch, ai_edge_litert  # noqa: F401  (fail here, not mid-export)
print(f"[bootstrap] ok: torch {torch.__version__}, coremltools {coremltools.__version__}, onnxruntime {onnxruntime.__version__}")
PY
echo "$want" > "$STAMP"
