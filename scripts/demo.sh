#!/usr/bin/env bash
# The main job on the built-in dataset (scikit-learn's 8×8 digits, no network needed):
# train, evaluate, then predict on the image files written from the test split (not the grid.png
# that `data samples` draws beside them).
set -euo pipefail
cd "$(dirname "$0")/.."
yingshe=.venv/bin/yingshe
run=${RUN_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}

"$yingshe" train --data digits --model seed-cnn --epochs 15 --out "$run"
"$yingshe" evaluate "$run"
"$yingshe" data samples digits --split test --count 8 --out "$run/samples"
"$yingshe" predict "$run" "$run"/samples/[0-9]*.png --top-k 3 --output "$run/predictions.csv"
echo
echo "report: $run/report.md (and $run/report.json); predictions: $run/predictions.csv"
