#!/usr/bin/env bash
# Quality against training budget: one `s` run per budget (edgead train --max-minutes M), exported and
# evaluated on the set's test images. Usage: [METHOD=diad] [FILL=1] benchmarks/budget_curve.sh DATA OUT MINUTES...
# e.g. benchmarks/budget_curve.sh ../shared/data/tire benchmarks/results/budget 4 8 16   (METHOD defaults to d3ad;
# FILL=1 trains with --fill-budget: every stage for its whole share, more steps than the preset when there is time)
set -euo pipefail
data=$1; out=$2; shift 2
method=${METHOD:-d3ad}
fill=(); suffix=""
if [ "${FILL:-0}" = 1 ]; then fill=(--fill-budget); suffix="-fill"; fi
mkdir -p "$out/work"
for m in "$@"; do
  name="$(basename "$data")-${method}-s-${m}min${suffix}"
  run="$out/work/$name"; bundle="$out/work/$name.edgead"
  rm -rf "$run" "$bundle"
  start=$(date +%s)
  edgead train --method "$method" --preset s --device cpu --data "$data" --out "$run" --max-minutes "$m" "${fill[@]}" > "$out/$name.train.json"
  trained=$(date +%s)
  edgead export "$run" --out "$bundle" > "$out/$name.export.json"
  edgead evaluate "$bundle" --data "$data" --backend onnxruntime-cpu --out "$out/$name.report.json" > "$out/$name.table.txt"
  echo "{\"budget_minutes\": $m, \"train_wall_s\": $((trained - start)), \"export_evaluate_wall_s\": $(($(date +%s) - trained))}" > "$out/$name.wall.json"
done
