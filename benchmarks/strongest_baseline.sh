#!/usr/bin/env bash
# Issue "above the strongest baseline": PatchCore at full strength (10% coreset, upsample-then-average
# patches) and the latent diffusion methods with the kNN term at the same strength, on each set, trained
# on this CPU one after another (each alone on the machine), exported and evaluated; the latent methods
# also with the reconstruction map alone (knn.weight=0) and the kNN map alone (knn.weight=1).
#   benchmarks/strongest_baseline.sh DATA_ROOT RUNS OUT [SETS...] (default sets: tire grid hazelnut_toy)
#   METHODS="patchcore d3ad diad" (default) picks the methods; DIAD_MINUTES (default 16) DiAD's budget.
set -u
data=$1; runs=$2; out=$3; shift 3
sets=${*:-tire grid hazelnut_toy}
methods=${METHODS:-patchcore d3ad diad}
mkdir -p "$runs" "$out"
t() { /usr/bin/time -f "%e s wall, %M KB peak" "$@"; }
ev() {  # bundle set name
  edgead evaluate "$1" --data "$data/$2" --backend onnxruntime-cpu --out "$out/$3.json" > "$out/$3.txt" 2>&1
}
for s in $sets; do
  for m in $methods; do
    run="$runs/$s-$m"
    case $m in
      patchcore) args=() ;;
      d3ad) args=(--preset s --device cpu) ;;
      diad) args=(--preset s --device cpu --max-minutes "${DIAD_MINUTES:-16}" --fill-budget) ;;
      *) echo "unknown method $m"; exit 2 ;;
    esac
    [ -f "$run/config.yaml" ] || t edgead train --method "$m" --data "$data/$s" --out "$run" "${args[@]}" \
      > "$out/train-$s-$m.log" 2>&1
    t edgead export "$run" --out "$out/$s-$m.edgead" --overwrite > "$out/export-$s-$m.json" 2> "$out/export-$s-$m.log"
    ev "$out/$s-$m.edgead" "$s" "$s-$m"
    if [ "$m" != patchcore ]; then
      for w in 0 1; do
        edgead export "$run" --out "$out/$s-$m-w$w.edgead" --overwrite --set "$m.knn.weight=$w" \
          > /dev/null 2> "$out/export-$s-$m-w$w.log"
        ev "$out/$s-$m-w$w.edgead" "$s" "$s-$m-w$w"
      done
    fi
  done
done
echo STRONGEST BASELINE DONE
