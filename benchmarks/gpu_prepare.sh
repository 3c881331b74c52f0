#!/bin/bash
# Prepare what benchmarks/gpu.sh needs on a lent GPU machine (no internet there), here, in the repo root:
#   .whl/      Python 3.12 wheels of what the machine's image lacks (zarr 3 and its codecs, smp, MONAI)
#   .gpudata/  the first 6 frames of ../shared/data/t98g-timelapse/stack.tif (zlib), for the mosaics
# Both are git-ignored and travel with the call through `carry`. The tracked weights are 56 MB and the tree
# may carry 64 MiB: move the nuclei model out of the tree for the call (the benchmark runs the phase model):
#   bash benchmarks/gpu_prepare.sh && mv weights/nuclei /tmp/nuclei-aside
#   device run: command "bash benchmarks/gpu.sh", carry [".whl", ".gpudata"], timeout_s 540
#   mv /tmp/nuclei-aside weights/nuclei
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CELLSEG_DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl .gpudata/t98g-timelapse
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  numcodecs==0.16.6 zarr==3.1.6 donfig==0.8.1.post1 google-crc32c==1.9.0 segmentation-models-pytorch==0.6.0 \
  monai==1.6.1
"$PY" - "$DATA/t98g-timelapse/stack.tif" .gpudata/t98g-timelapse/stack.tif <<'PY'
import sys, tifffile
with tifffile.TiffFile(sys.argv[1]) as tif:
    frames = tif.series[0].asarray()[:6]
tifffile.imwrite(sys.argv[2], frames, compression="zlib", metadata={"axes": "TYX"})
PY
du -sh .whl .gpudata
