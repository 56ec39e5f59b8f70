#!/usr/bin/env bash
# Train the DiffusionAD `s` preset on the three evaluation sets at once on one GPU, for a fixed
# time, then pack each run (fp16 weights) into $OUT. Usage:
#   benchmarks/gpu_train.sh MINUTES DATA_ROOT TEXTURES RUNS_DIR OUT_DIR [--resume]
set -u
minutes=$1; data=$2; textures=$3; runs=$4; out=$5; resume=${6:-}
mkdir -p "$runs" "$out"
for ds in tire grid hazelnut_toy; do
  fg=--foreground; [ "$ds" = grid ] && fg=--no-foreground
  python3 -m edgead.cli train --data "$data/$ds" --out "$runs/$ds" --preset s --image-size 256 \
    --steps 100000 --batch-size 16 --max-minutes "$minutes" --textures "$textures" $fg \
    --device cuda --set train.learning_rate=2e-4 --set train.mixed_precision=true \
    --set train.num_workers=5 --set train.checkpoint_every=500 $resume > "$runs/$ds.log" 2>&1 &
done
wait
for ds in tire grid hazelnut_toy; do
  tail -c 600 "$runs/$ds.log"; echo
  python3 benchmarks/run_archive.py pack "$runs/$ds" "$out/$ds.tar"
done
