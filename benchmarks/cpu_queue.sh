#!/usr/bin/env bash
# The CPU measurements of the latent methods, one after another (each alone on the machine):
# D3AD `s` on grid and hazelnut_toy (+ ablations), DiAD `s` multi-product and single-product,
# DiAD's SFF ablation, and a clean timing run of D3AD `s` on tire. Logs and reports in OUT.
#   benchmarks/cpu_queue.sh DATA_ROOT RUNS OUT
set -u
data=$1; runs=$2; out=$3
mkdir -p "$runs" "$out"
t() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
for s in grid hazelnut_toy; do
  t edgead train --method d3ad --data "$data/$s" --out "$runs/$s-d3ad-s" --preset s --device cpu > "$out/train-d3ad-$s.log" 2>&1
  benchmarks/d3ad_study.sh "$runs/$s-d3ad-s" "$data/$s" "$out/study-$s" > "$out/study-$s.log" 2>&1
done
t edgead train --method diad --data "$data/tire" --data "$data/grid" --data "$data/hazelnut_toy" \
  --out "$runs/multi-diad-s" --preset s --device cpu > "$out/train-diad-multi.log" 2>&1
for s in tire grid hazelnut_toy; do
  t edgead train --method diad --data "$data/$s" --out "$runs/$s-diad-s" --preset s --device cpu > "$out/train-diad-$s.log" 2>&1
done
t python benchmarks/diad_ablation.py "$runs/multi-diad-s" "$runs/multi-diad-s-nosff" > "$out/train-diad-nosff.log" 2>&1
rm -rf "$runs/tire-d3ad-s-timing"
t edgead train --method d3ad --data "$data/tire" --out "$runs/tire-d3ad-s-timing" --preset s --device cpu > "$out/train-d3ad-tire-timing.log" 2>&1
echo QUEUE DONE
