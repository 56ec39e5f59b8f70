#!/usr/bin/env bash
# Does a training budget hold when the machine is busy? A 4-minute budgeted run beside a second job that wants
# the same cores: a pure-Python loop (one core) beside D3AD, a PyTorch matrix product on 2 threads (as a second
# training would be) beside DiAD. Writes each run's summary and its wall time (process start to exit).
#   benchmarks/budget_under_load.sh DATA_SET RUNS OUT        e.g. ../shared/data/hazelnut_toy /tmp/runs out
set -eu
data=$1; runs=$2; out=$3
mkdir -p "$runs" "$out"
load() {  # kind seconds
  if [ "$1" = python ]; then
    python -c "import time; t=time.time()
while time.time()-t<$2: sum(i*i for i in range(10000))" &
  else
    python -c "import time, torch; torch.set_num_threads(2); a=torch.randn(1500,1500); t=time.time()
while time.time()-t<$2: a@a" &
  fi
  echo $!
}
for pair in "d3ad python" "diad torch"; do
  set -- $pair
  rm -rf "$runs/load-$1"
  pid=$(load "$2" 900)
  start=$(date +%s.%N)
  edgead train --method "$1" --data "$data" --out "$runs/load-$1" --max-minutes 4 --device cpu \
    > "$out/$1-beside-$2.json" 2> "$out/$1-beside-$2.log"
  end=$(date +%s.%N)
  kill "$pid"
  python -c "import json,sys; d=json.load(open('$out/$1-beside-$2.json')); print(json.dumps({'method': '$1', 'load': '$2', 'budget_minutes': d['budget_minutes'], 'budget_used_minutes': d['budget_used_minutes'], 'wall_minutes': round(($end - $start) / 60, 2), 'cut_by_budget': d.get('cut_by_budget')}))" \
    > "$out/$1-beside-$2.summary.json"
  cat "$out/$1-beside-$2.summary.json"
done
