#!/usr/bin/env bash
# Trains iMOE with default settings on the Fig. 3c groups of the published
# data that the README's results table lists, and prints each run's test
# metrics.  About 1 h in all on a 2-core CPU (CY45-05_1 and LSD take the most).
# Usage: scripts/reproduce_imoe_fig3c.sh DATA_DIR OUT_DIR [--set key=value ...]
set -euo pipefail
data=${1:?data folder}; out=${2:?output folder}; shift 2
keys=(test_mape_pct test_rmse_ah test_r2 val_mape_pct train_seconds seconds_per_epoch epochs_run best_epoch)
run() {
  local name=$1; shift
  slbjax run "$@" --data-dir "$data" --workdir "$out/$name" > "$out/$name.log" 2>&1
  python3 - "$out/$name/metrics.json" "$name" "${keys[@]}" <<'PY'
import json, sys
path, name, *keys = sys.argv[1:]
m = json.load(open(path))
print(name, " ".join(f"{k}={m[k]}" for k in keys))
PY
}
mkdir -p "$out"
run CY25-05_1  imoe-ul --set data.condition=CY25-05_1 "$@"
run CY45-05_1  imoe-ul --set data.condition=CY45-05_1 "$@"
run CY25-025_1 imoe-ul --set data.condition=CY25-025_1 "$@"
run LSD        imoe-lsd "$@"
