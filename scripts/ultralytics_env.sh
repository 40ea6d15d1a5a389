#!/usr/bin/env bash
# Build a side Python environment where ultralytics imports, for the Ultralytics detector's
# slow tests (tests/captioners/grounded/test_ultralytics_slow.py).
#
# Why a side env: ultralytics needs torchvision, and no torchvision imports beside the CPU
# torch 2.13.0 of the main environment (.ci/run). This one pairs torch 2.14.1 with
# torchvision 0.29.1 from PyPI (the CUDA build, about 5.5 GB on disk; it runs on the CPU too).
#
#   bash scripts/ultralytics_env.sh [VENV_DIR]        # default: ../ultra-venv beside the repo
#   CAPTIONKIT_ULTRALYTICS_PYTHON=VENV_DIR/bin/python \
#       python -m pytest -m slow tests/captioners/grounded/test_ultralytics_slow.py
#
# Keep VENV_DIR outside the repository. Versions can be overridden with TORCH_SPEC,
# TORCHVISION_SPEC and ULTRALYTICS_SPEC; the defaults are the ones the tests were run with.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$(dirname "$REPO")/ultra-venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.29.1}"
ULTRALYTICS_SPEC="${ULTRALYTICS_SPEC:-ultralytics==8.4.190}"

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/" in
  "$REPO"/*) echo "ultralytics_env.sh: put the venv outside the repository, not in $VENV" >&2; exit 2 ;;
esac

python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" "$TORCH_SPEC" "$TORCHVISION_SPEC"
"${PIP[@]}" "$ULTRALYTICS_SPEC"
"${PIP[@]}" -e "$REPO[grounded]"

# Smoke check: torchvision's compiled ops load and a random YOLOv8n builds offline.
YOLO_CONFIG_DIR="$(mktemp -d)" "$VENV/bin/python" - <<'PY'
import torch, torchvision, ultralytics
from torchvision.ops import nms

nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
ultralytics.YOLO("yolov8n.yaml")
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"ultralytics {ultralytics.__version__}: OK")
PY
echo "export CAPTIONKIT_ULTRALYTICS_PYTHON=$VENV/bin/python"
