#!/bin/bash
# Everything a lent H100/H200 is for, as one command (see benchmarks/gpu_prepare.sh for what it carries):
#   1. install the carried wheels;
#   2. train: the phase recipe's 4-fold cross-validation from scratch (benchmarks/crossval.py, the folds of the
#      CPU run in runs/cv/phase) with twice the CPU run's steps (CV_EPOCHS x CV_STEPS; the CPU run: 30 x 40),
#      batches made by LOADER_WORKERS processes; held-out tables and per-fold scores to $OUT/cv;
#   3. the GPU tests (tests/test_gpu.py);
#   4. at 2568x1912: benchmarks/postprocess.py with the torch labeller on the GPU, benchmarks/segment.py
#      (FRAMES mosaic frames, d4, per-stage seconds, --post-workers WORKERS, --batch-size BATCHES with
#      --label-on cpu, then the last batch size with --label-on device) and
#      benchmarks/peer.py (cellseg against the MONAI loop, same model and device).
# Each step has its own time limit (200 + 45 + 45 + 110 + 60 + 80 s, and the install): the whole fits the
# device tool's 600 s per call. Tables land in $OUT (the
# device tool brings them back) or runs/gpu. The benchmarks run the shipped phase model when weights/phase is
# there, else the first fold's model, else an untrained network of the same architecture (the speed is the same).
#   ship (not in the default): the shippable phase model, trained on the shipped model's 32 / 8 split with the
#      same steps; its weights come back in parts under 16 MiB (cat $OUT/ship/phase.safetensors.part-* >
#      model.safetensors beside config.json, then python weights/ship.py phase THAT_FOLDER PHASE_DATA here).
#   ship-nuclei (not in the default; a call of its own, carrying .gpudata-nuclei instead of .gpudata): the
#      nuclei model from scratch on its 564 / 50 split (50 more held out), 30 x 120 steps; weights back likewise.
#      Run it as STAGES=ship-nuclei alone (the benchmarks need .gpudata).
# STAGES picks steps (default train,tests,bench). Tested on CPU with:
#   SKIP_INSTALL=1 PYTHON=.venv/bin/python DEVICE=cpu SLOW=10 STAGES=train,ship,bench CV_EPOCHS=1 CV_STEPS=2 \
#     FRAMES=1 PEER_FRAMES=1 TTA=none WORKERS=1 BATCHES=1 LOADER_WORKERS=2 bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.gpudata}
STAGES=${STAGES:-train,tests,bench}
FRAMES=${FRAMES:-600}
PEER_FRAMES=${PEER_FRAMES:-16}
TTA=${TTA:-d4}
WORKERS=${WORKERS:-14}
BATCHES=${BATCHES:-8,32}
CV_EPOCHS=${CV_EPOCHS:-20}
CV_STEPS=${CV_STEPS:-120}
CROP=${CROP:-384}                     # the phase crops: 384 px won or tied 256 px on every CPU fold
INTERIOR_WIDTH=${INTERIOR_WIDTH:-2}   # the interior target's erosion (train --interior-width)
BORDER_WEIGHT=${BORDER_WEIGHT:-0}     # U-Net's separation weight w0 (train --border-weight; 0: off)
LOADER_WORKERS=${LOADER_WORKERS:-12}
RUNS=${RUNS:-/tmp/cellseg-gpu}
SLOW=${SLOW:-1}   # multiplies every time limit (a CPU test of this script needs about 10)
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
has() { [[ ",$STAGES," == *",$1,"* ]]; }
if [ -z "${SKIP_INSTALL:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" | tee "$OUT/error.txt"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, numba, zarr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numba', numba.__version__, 'zarr', zarr.__version__)"
  nproc; date -u; } > "$OUT/machine.txt" 2>&1

if has train; then
  mkdir -p "$OUT/cv"
  timeout "$((${TRAIN_SECONDS:-200} * SLOW))" "$PY" benchmarks/crossval.py "$DATA/usiigaci-phase" -o "$RUNS/cv" --folds 4 \
    --same set23,set40 --epochs "$CV_EPOCHS" --steps-per-epoch "$CV_STEPS" --lr 1e-3 --schedule cosine --init none \
    --seed 0 --device "$DEVICE" --loader-workers "$LOADER_WORKERS" --crop "$CROP" --interior-width "$INTERIOR_WIDTH" \
    --border-weight "$BORDER_WEIGHT" > "$OUT/cv/crossval.md" 2> "$OUT/cv/train.log"
  echo "crossval.py exit $? at $(date -u +%T)" >> "$OUT/cv/train.log"
  for f in "$RUNS"/cv/fold-*/scores.json; do
    [ -f "$f" ] && cp "$f" "$OUT/cv/$(basename "$(dirname "$f")").scores.json"
  done
  [ -f "$RUNS/cv/crossval.json" ] && cp "$RUNS/cv/crossval.json" "$OUT/cv/"
  for h in "$RUNS"/cv/fold-*/model/history.csv; do
    [ -f "$h" ] && cp "$h" "$OUT/cv/$(basename "$(dirname "$(dirname "$h")")").history.csv"
  done
fi

if has ship; then   # the shippable phase model: the shipped model's split (weights/phase_data.py), GPU recipe
  mkdir -p "$OUT/ship"
  "$PY" -c "import sys; sys.path.insert(0, 'weights'); from pathlib import Path; import phase_data; print(phase_data.make(Path(sys.argv[1]), Path(sys.argv[2])))" \
    "$RUNS/phase-data" "$DATA/usiigaci-phase" > "$OUT/ship/data.txt" 2>&1
  timeout "$((${SHIP_SECONDS:-150} * SLOW))" "$PY" -m cellsegcli train "$RUNS/phase-data" -o "$RUNS/phase" --init none \
    --epochs "$CV_EPOCHS" --steps-per-epoch "$CV_STEPS" --patience "$CV_EPOCHS" --lr 1e-3 --schedule cosine \
    --seed 0 --name phase --loader-workers "$LOADER_WORKERS" --no-checkpoint --device "$DEVICE" --json \
    --crop "$CROP" --interior-width "$INTERIOR_WIDTH" --border-weight "$BORDER_WEIGHT" > "$OUT/ship/train.json" 2> "$OUT/ship/train.log"
  echo "train exit $?" >> "$OUT/ship/train.log"
  if [ -f "$RUNS/phase/model.safetensors" ]; then   # back in parts under 16 MiB: cat phase.safetensors.part-* > ...
    split -b 15m -d "$RUNS/phase/model.safetensors" "$OUT/ship/phase.safetensors.part-"
    cp "$RUNS/phase/config.json" "$RUNS/phase/history.csv" "$OUT/ship/"
  fi
fi

if has ship-nuclei; then   # the nuclei model from scratch on its split (weights/nuclei_data.py), GPU recipe
  mkdir -p "$OUT/ship-nuclei"
  NUCLEI_DATA=${NUCLEI_DATA:-.gpudata-nuclei/dsb2018-train}
  "$PY" -c "import sys, json; sys.path.insert(0, 'weights'); from pathlib import Path; import nuclei_data as n; src = Path(sys.argv[1]); train, val, test = n.split(src, json.loads(n.VAL_FROM.read_text())); n.link(Path(sys.argv[2]), src, train); n.link(Path(sys.argv[2]) / 'val', src, val); print(len(train), len(val), len(test))" \
    "$NUCLEI_DATA" "$RUNS/nuclei-data" > "$OUT/ship-nuclei/data.txt" 2>&1
  timeout "$((${SHIP_SECONDS:-400} * SLOW))" "$PY" -m cellsegcli train "$RUNS/nuclei-data" -o "$RUNS/nuclei" --init none \
    --epochs "${NUCLEI_EPOCHS:-30}" --steps-per-epoch "${NUCLEI_STEPS:-120}" --patience "${NUCLEI_EPOCHS:-30}" \
    --lr 1e-3 --schedule cosine --seed 0 --name nuclei --loader-workers "$LOADER_WORKERS" --no-checkpoint \
    --device "$DEVICE" --json > "$OUT/ship-nuclei/train.json" 2> "$OUT/ship-nuclei/train.log"
  echo "train exit $?" >> "$OUT/ship-nuclei/train.log"
  if [ -f "$RUNS/nuclei/model.safetensors" ]; then
    split -b 15m -d "$RUNS/nuclei/model.safetensors" "$OUT/ship-nuclei/nuclei.safetensors.part-"
    cp "$RUNS/nuclei/config.json" "$RUNS/nuclei/history.csv" "$OUT/ship-nuclei/"
  fi
fi

MODEL=weights/phase
if [ ! -f "$MODEL/config.json" ]; then
  MODEL=$(ls -d "$RUNS"/phase "$RUNS"/cv/fold-*/model 2>/dev/null | head -1)
  if [ -z "$MODEL" ] || [ ! -f "$MODEL/model.safetensors" ]; then
    MODEL=$RUNS/untrained
    "$PY" -c "import sys, pathlib; from cellsegcli.models import ModelConfig, build, save_model; save_model(build('resnet18-unet', classes=2), ModelConfig(name='untrained', architecture='resnet18-unet'), pathlib.Path(sys.argv[1]))" "$MODEL"
  fi
fi
echo "benchmark model: $MODEL" >> "$OUT/machine.txt"

if has tests && [ "$DEVICE" = cuda ]; then
  timeout $((45 * SLOW)) "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1
fi

if has bench; then
  timeout $((45 * SLOW)) "$PY" benchmarks/postprocess.py --data "$DATA" --model "$MODEL" --repeat 3 \
    --torch-device "$DEVICE" > "$OUT/postprocess.md" 2> "$OUT/postprocess.log"
  echo "postprocess.py exit $?" >> "$OUT/postprocess.log"
  timeout $((110 * SLOW)) "$PY" benchmarks/segment.py --data "$DATA" --model "$MODEL" --device "$DEVICE" --cases mosaic \
    --mosaic-frames "$FRAMES" --mosaic-tta "$TTA" --post-workers "$WORKERS" --label-on cpu --batch-size "$BATCHES" \
    > "$OUT/segment.md" 2> "$OUT/segment.log"
  echo "segment.py exit $?" >> "$OUT/segment.log"
  timeout $((60 * SLOW)) "$PY" benchmarks/segment.py --data "$DATA" --model "$MODEL" --device "$DEVICE" --cases mosaic \
    --mosaic-frames "$FRAMES" --mosaic-tta "$TTA" --post-workers "$WORKERS" --label-on device \
    --batch-size "${BATCHES##*,}" >> "$OUT/segment.md" 2>> "$OUT/segment.log"
  echo "segment.py --label-on device exit $?" >> "$OUT/segment.log"
  timeout $((80 * SLOW)) "$PY" benchmarks/peer.py --data "$DATA" --model "$MODEL" --device "$DEVICE" --tta "$TTA" \
    --frames "$((FRAMES < 100 ? FRAMES : 100))" --peer-frames "$PEER_FRAMES" --post-workers "${WORKERS##*,}" \
    --out "$OUT/peer.md" > "$OUT/peer.log" 2>&1
  echo "peer.py exit $?" >> "$OUT/peer.log"
fi
cat "$OUT"/machine.txt "$OUT"/cv/crossval.md "$OUT"/postprocess.md "$OUT"/segment.md "$OUT"/peer.md 2>/dev/null
