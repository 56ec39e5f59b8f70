#!/usr/bin/env bash
# D3AD on one data set: export (default settings), evaluate, then the ablations the paper's claims
# rest on, each an export of the same training run with one inference setting changed:
#   fixed t_max (d3ad.dynamic=false), a noised start (d3ad.start=noised), ImageNet features
#   instead of the domain-adapted ones (d3ad.adapt=false). Reports go to OUT/<variant>.json.
#
#   benchmarks/d3ad_study.sh RUN DATA OUT
set -eu
run=$1; data=$2; out=$3
mkdir -p "$out"
variant() {
  name=$1; shift
  edgead export "$run" --out "$out/$name.edgead" --data "$data" --parity-images 16 "$@" > "$out/$name.export.json"
  edgead evaluate "$out/$name.edgead" --data "$data" --backend onnxruntime-cpu --out "$out/$name.json" > "$out/$name.txt"
  echo "== $name"; cat "$out/$name.txt"
}
variant d3ad
variant fixed-tmax --set d3ad.dynamic=false
variant noised-start --set d3ad.start=noised
variant imagenet-features --set d3ad.adapt=false
