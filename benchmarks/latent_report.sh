#!/usr/bin/env bash
# After benchmarks/cpu_queue.sh: export and evaluate the DiAD runs (multi-product model, single-product
# models, the SG and SFF ablations), check ONNX Runtime against PyTorch on every validation and test
# image of tire, time the runtime against PyTorch per stage, and build TensorRT-RTX engines of the
# real bundles. Reports in OUT.
#   benchmarks/latent_report.sh DATA_ROOT RUNS OUT QUEUE_OUT      (QUEUE_OUT: cpu_queue.sh's OUT)
set -u
data=$1; runs=$2; out=$3; queue=$4
mkdir -p "$out"
sets="tire grid hazelnut_toy"
all_data() { for s in $sets; do printf -- "--data %s/%s " "$data" "$s"; done; }
ev() { edgead evaluate "$1" $(all_data) --backend onnxruntime-cpu --out "$out/$2.json" > "$out/$2.txt" 2>&1; }
# DiAD, one model for the three products; parity on every image of every product
edgead export "$runs/multi-diad-s" --out "$out/diad-multi.edgead" --parity-images all > "$out/diad-multi.export.json" 2> "$out/diad-multi.export.log"
ev "$out/diad-multi.edgead" diad-multi
edgead export "$runs/multi-diad-s" --out "$out/diad-multi-nosg.edgead" --set diad.sg=false --parity-images 8 > /dev/null 2>&1
ev "$out/diad-multi-nosg.edgead" diad-multi-nosg
edgead export "$runs/multi-diad-s-nosff" --out "$out/diad-multi-nosff.edgead" --parity-images 8 > /dev/null 2>&1
ev "$out/diad-multi-nosff.edgead" diad-multi-nosff
for s in $sets; do
  edgead export "$runs/$s-diad-s" --out "$out/diad-$s.edgead" --parity-images 16 > /dev/null 2>&1
  edgead evaluate "$out/diad-$s.edgead" --data "$data/$s" --backend onnxruntime-cpu --out "$out/diad-$s.json" > "$out/diad-$s.txt" 2>&1
done
# D3AD tire: parity on all 141 validation and test images
edgead export "$runs/tire-d3ad-s" --out "$out/d3ad-tire.edgead" --data "$data/tire" --parity-images all > "$out/d3ad-tire.export.json" 2> "$out/d3ad-tire.export.log"
# CPU latency per stage, runtime vs PyTorch eager (alternating), on real tire images
edgead benchmark "$out/d3ad-tire.edgead" --checkpoint "$runs/tire-d3ad-s" --runs 10 --batch 4 --backend onnxruntime-cpu \
  --images "$data/tire/validation/good" --out "$out/benchmark-d3ad-tire.json" > "$out/benchmark-d3ad-tire.txt" 2>&1
edgead benchmark "$out/diad-multi.edgead" --product tire --checkpoint "$runs/multi-diad-s" --runs 10 --batch 4 \
  --backend onnxruntime-cpu --images "$data/tire/validation/good" --out "$out/benchmark-diad-multi.json" > "$out/benchmark-diad-multi.txt" 2>&1
# TensorRT for RTX engines of the real bundles, built here without a GPU
for b in d3ad-tire diad-multi; do
  for p in fp16 fp32; do
    edgead export "$out/$b.edgead" --engine $p --trt rtx --sm 86,89,120 > "$out/rtx-$b-$p.json" 2> "$out/rtx-$b-$p.log"
  done
done

# DiffusionAD (the GPU runs brought back with benchmarks/run_archive.py) and the PatchCore baseline,
# re-exported with today's calibration: metrics and the operating point per set
python benchmarks/quality.py --data-root "$data" --sets $sets --diffusionad-run "$runs/{set}-s2" --out "$out/quality" \
  > "$out/quality.log" 2>&1
echo QUALITY DONE
# operating points: false-reject and miss rates for several calibration settings, every method and set
mkdir -p "$out/op"
for s in $sets; do
  python benchmarks/operating_points.py "$out/quality/work/$s-patchcore.edgead" --data "$data/$s" --out "$out/op/patchcore-$s.json"
  python benchmarks/operating_points.py "$out/quality/work/$s-diffusionad.edgead" --data "$data/$s" --out "$out/op/diffusionad-$s.json"
  python benchmarks/operating_points.py "$out/diad-multi.edgead" --data "$data/$s" --product "$s" --out "$out/op/diad-multi-$s.json"
done
for s in grid hazelnut_toy; do
  python benchmarks/operating_points.py "$queue/study-$s/d3ad.edgead" --data "$data/$s" --out "$out/op/d3ad-$s.json"
done
python benchmarks/operating_points.py "$out/d3ad-tire.edgead" --data "$data/tire" --out "$out/op/d3ad-tire.json"
echo REPORT DONE
