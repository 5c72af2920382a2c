#!/usr/bin/env bash
# Reproduces the pretrained model shipped in src/napari_em_unet/models/isbi2012_unet.keras.
# Trains on ISBI 2012 slices 0-15, keeps the best epoch by V_rand on slices 16-19.
# About an hour on 2 CPU cores (measured 2026-11-22).
set -euo pipefail
DATA=${DATA:-"$(dirname "$0")/../../shared/data/isbi2012"}
OUT=${1:-src/napari_em_unet/models/isbi2012_unet.keras}
em-unet train \
  --image "$DATA/train-volume.tif" --labels "$DATA/train-labels.tif" \
  --slices 0-15 --validation-slices 16-19 \
  --epochs 28 --steps-per-epoch 100 --batch-size 8 --patch-size 256 \
  --learning-rate 1e-3 --seed 0 \
  -o "$OUT"
