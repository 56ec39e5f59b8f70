#!/usr/bin/env bash
# The quality-vs-budget curve on a lent GPU: D3AD and DiAD `s` trained with `--max-minutes M --fill-budget` for
# every M, all runs at once, each in its own process (a session's GPU minutes are few; the GPU is shared, so
# each run's step counts in RUNS/<name>.json are what it got, not what it would get alone). Then each run is
# packed into one archive for the trip back (fp16; D3AD's kNN prior is left to recompute here, see
# benchmarks/run_archive.py) in RUNS/packed/. Here: unpack, `--stage prior` (D3AD), export, evaluate.
#
#   benchmarks/gpu_budget.sh DATA RUNS MINUTES...     e.g. benchmarks/gpu_budget.sh data/tire /tmp/runs 1 3 8
# (PRESET=tiny DEVICE=cpu: the same on a CPU, to check the script)
set -u
data=$1; runs=$2; shift 2
mkdir -p "$runs/packed"
names=()
for m in "$@"; do
  for method in d3ad diad; do
    name="$(basename "$data")-${method}-${PRESET:-s}-${m}min-gpu"
    names+=("$name")
    python3 -m edgead.cli train --method "$method" --preset "${PRESET:-s}" --device "${DEVICE:-cuda}" --data "$data" --out "$runs/$name" \
      --max-minutes "$m" --fill-budget > "$runs/$name.json" 2> "$runs/$name.log" &
  done
done
wait
for name in "${names[@]}"; do
  echo "== $name: $(tail -c 400 "$runs/$name.json" | tr '\n' ' ')"
  case $name in
    *-d3ad-*) keep=(--only autoencoder denoiser feature_extractor patch_bank --redo prior) ;;
    *) keep=(--only autoencoder denoiser_guided sg patch_bank) ;;
  esac
  python3 "$(dirname "$0")/run_archive.py" pack "$runs/$name" "$runs/packed/$name" --single "${keep[@]}"
  cp "$runs/$name.json" "$runs/$name.log" "$runs/$name/train_log.jsonl" "$runs/packed/" 2>/dev/null
  mv "$runs/packed/train_log.jsonl" "$runs/packed/$name.train_log.jsonl" 2>/dev/null
done
