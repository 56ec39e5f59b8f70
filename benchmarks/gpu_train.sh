#!/usr/bin/env bash
# Train the DiffusionAD `s` preset to the paper's schedule (3000 epochs at batch 16 = 8 normal +
# 8 synthetic, Adam 1e-4) on tire, grid and hazelnut_toy at once on one GPU, each run stopping at
# its schedule or after MINUTES, whichever comes first. Extra arguments go to every `edgead train`
# (e.g. --set train.mixed_precision=true). Then, per run: `edgead` writes RUNS/<set>/ and the log
# RUNS/<set>.log; pack them with benchmarks/run_archive.py.
#
#   benchmarks/gpu_train.sh MINUTES DATA_ROOT TEXTURES RUNS_DIR [--set KEY=VALUE ...]
set -u
minutes=$1; data=$2; textures=$3; runs=$4; shift 4
mkdir -p "$runs"
sets=${SETS:-tire grid hazelnut_toy}
for ds in $sets; do
  steps=$(python3 -c "from edgead.data.datasets import load_dataset as l; print(round(3000 * len(l('$data/$ds').train) / 16))")
  fg=--foreground; [ "$ds" = grid ] && fg=--no-foreground
  echo "$ds: $steps steps (3000 epochs)"
  python3 -m edgead.cli train --data "$data/$ds" --out "$runs/$ds" --preset s --image-size 256 \
    --steps "$steps" --batch-size 16 --max-minutes "$minutes" --textures "$textures" $fg \
    --device cuda --set train.checkpoint_every=2000 "$@" > "$runs/$ds.log" 2>&1 &
done
wait
for ds in $sets; do echo "== $ds"; tail -n 3 "$runs/$ds.log"; done
