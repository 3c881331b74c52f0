#!/bin/bash
# The GPU benchmark as one command, for a lent H100/H200 (see benchmarks/gpu_prepare.sh for what it carries):
# installs the carried wheels, runs the GPU tests, then at 2568x1912 with d4: benchmarks/segment.py (FRAMES
# mosaic frames, per-stage seconds, --post-workers sweep) and benchmarks/peer.py (cellseg against the MONAI
# loop, same model and device). Tables land in $OUT (the device tool brings them back) or runs/gpu.
# Tested on CPU with: SKIP_INSTALL=1 PYTHON=.venv/bin/python DEVICE=cpu FRAMES=1 PEER_FRAMES=1 TTA=none \
#   WORKERS=1 bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
FRAMES=${FRAMES:-600}
PEER_FRAMES=${PEER_FRAMES:-16}
TTA=${TTA:-d4}
WORKERS=${WORKERS:-4,14}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_INSTALL:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" | tee "$OUT/error.txt"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, numba, zarr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numba', numba.__version__, 'zarr', zarr.__version__)"
  nproc; } > "$OUT/machine.txt" 2>&1
if [ "$DEVICE" = cuda ]; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1
fi
timeout 330 "$PY" benchmarks/segment.py --data .gpudata --device "$DEVICE" --cases mosaic --mosaic-frames "$FRAMES" \
  --post-workers "$WORKERS" > "$OUT/segment.md" 2> "$OUT/segment.log"
echo "segment.py exit $?" >> "$OUT/segment.log"
timeout 200 "$PY" benchmarks/peer.py --data .gpudata --device "$DEVICE" --tta "$TTA" --frames "$((FRAMES < 100 ? FRAMES : 100))" \
  --peer-frames "$PEER_FRAMES" --post-workers "${WORKERS##*,}" --out "$OUT/peer.md" > "$OUT/peer.log" 2>&1
echo "peer.py exit $?" >> "$OUT/peer.log"
cat "$OUT"/machine.txt "$OUT"/segment.md "$OUT"/peer.md 2>/dev/null
