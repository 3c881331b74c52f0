#!/bin/bash
# Prepare what benchmarks/gpu.sh needs on a lent GPU machine (no internet there), here, in the repo root:
#   .whl/                     Python 3.12 wheels of what the machine's image lacks (zarr 3 and its codecs, smp,
#                             MONAI)
#   .gpudata/t98g-timelapse/  the first 3 frames of ../shared/data/t98g-timelapse/stack.tif (zlib), for the mosaics
#   .gpudata/usiigaci-phase/  the 40 Usiigaci frames for the cross-validation there, each normalised as cellseg
#                             does (percentiles 1 / 99.8) and stored as 8 bits (zlib + predictor: 0.65 MB a frame
#                             against 1.8 MB at 16 bits), the masks as they are; the 1/255 steps lie far below
#                             the augmentation's own noise (up to 0.03)
# All are git-ignored and travel with the call through `carry` (about 53 MB with the code). The tracked weights
# are 54 MB and the tree may carry 64 MiB: move both models out of the tree for the call (gpu.sh benchmarks
# the first fold's model it trains, or an untrained one of the same architecture):
#   bash benchmarks/gpu_prepare.sh && mv weights/phase /tmp/phase-aside && mv weights/nuclei /tmp/nuclei-aside
#   device run: command "bash benchmarks/gpu.sh", carry [".whl", ".gpudata"], timeout_s 560
#   mv /tmp/phase-aside weights/phase && mv /tmp/nuclei-aside weights/nuclei
#
# `bash benchmarks/gpu_prepare.sh nuclei` prepares a second call's data instead (both do not fit one call):
#   .gpudata-nuclei/dsb2018-train/  the 664 DSB2018 images as cellseg's loader sees them (grey, normalised,
#                             8 bits, zlib), their instance masks and an index.csv naming them (31 MB)
#   device run: command "STAGES=ship-nuclei bash benchmarks/gpu.sh", carry [".whl", ".gpudata-nuclei"],
#   both models moved aside as above; then here: cat $OUT/ship-nuclei/nuclei.safetensors.part-* >
#   model.safetensors beside its config.json, and score it on runs/nuclei-test (held out, see weights/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CELLSEG_DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
if [ "${1:-}" = nuclei ]; then
  mkdir -p .gpudata-nuclei/dsb2018-train/images .gpudata-nuclei/dsb2018-train/masks
  "$PY" - "$DATA/dsb2018-train" .gpudata-nuclei/dsb2018-train <<'PY'
import csv, shutil, sys
from pathlib import Path

import numpy as np
import tifffile

from cellsegcli.normalize import normalize, to_grey
from cellsegcli.training.data import read_image

source, out = Path(sys.argv[1]), Path(sys.argv[2])
with open(source / "index.csv") as f:
    rows = list(csv.DictReader(f))
for row in rows:
    grey = normalize(to_grey(read_image(source / row["image"])), (1.0, 99.8))
    row["image"] = f"images/{row['name']}.tif"
    tifffile.imwrite(out / row["image"], np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), compression="zlib",
                     compressionargs={"level": 9}, predictor=True)
    shutil.copyfile(source / row["mask"], out / row["mask"])
with open(out / "index.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
  du -sh .whl .gpudata-nuclei
  exit 0
fi
mkdir -p .whl .gpudata/t98g-timelapse .gpudata/usiigaci-phase/images .gpudata/usiigaci-phase/masks
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  numcodecs==0.16.6 zarr==3.1.6 donfig==0.8.1.post1 google-crc32c==1.9.0 segmentation-models-pytorch==0.6.0 \
  monai==1.6.1
"$PY" - "$DATA" .gpudata <<'PY'
import shutil, sys
from pathlib import Path

import numpy as np
import tifffile

from cellsegcli.normalize import normalize

data, out = Path(sys.argv[1]), Path(sys.argv[2])
with tifffile.TiffFile(data / "t98g-timelapse" / "stack.tif") as tif:
    frames = tif.series[0].asarray()[:3]
tifffile.imwrite(out / "t98g-timelapse" / "stack.tif", frames, compression="zlib", photometric="minisblack",
                 metadata={"axes": "TYX"})   # minisblack: 3 frames are not an RGB image
source = data / "usiigaci-phase"
for image in sorted((source / "images").glob("*.tif")):
    norm = normalize(tifffile.imread(image), (1.0, 99.8))
    eight = np.round(np.clip(norm, 0, 1) * 255).astype(np.uint8)
    tifffile.imwrite(out / "usiigaci-phase" / "images" / image.name, eight, compression="zlib",
                     compressionargs={"level": 9}, predictor=True)
    mask = source / "masks" / f"{image.stem}.png"
    shutil.copyfile(mask, out / "usiigaci-phase" / "masks" / mask.name)
PY
du -sh .whl .gpudata
