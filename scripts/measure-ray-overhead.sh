#!/usr/bin/env bash
# Ray overhead on one machine: the same 10 MiniLM runs (minilm-glue, seed 0, on small subsets) through the
# local backend (--jobs 2: two runs at a time, one thread each) and through Ray (a fresh local Ray instance
# started by the sweep itself, 1 CPU per run: also two at a time), alternating, ROUNDS times each.
# Prints per sweep: wall time (Ray's includes starting and stopping Ray), the sum of the runs' own times
# from sweep-status.json, and the load average when it ended (other users' load inflates both).
#   scripts/measure-ray-overhead.sh [OUT_DIR] [ROUNDS]
set -euo pipefail
out=${1:-/tmp/ray-overhead}
mkdir -p "$out"
rounds=${2:-2}
python=${PYTHON:-python}
sweep=(configs/sweeps/minilm-glue.yaml seed=0 max_train_samples=400 max_eval_samples=200 training.num_train_epochs=1)
export RAY_TMPDIR=$(mktemp -d /tmp/r-XXXX)   # a private Ray folder: no other Ray user on the machine is touched
trap 'rm -rf "$RAY_TMPDIR"' EXIT
for round in $(seq "$rounds"); do
    for backend in local ray; do
        dir="$out/$backend-$round"
        rm -rf "$dir"
        start=$(date +%s.%N)
        if [ "$backend" = local ]; then
            "$python" -m glue_lora.cli sweep "${sweep[@]}" --output-root "$dir" --jobs 2 > "$dir.log" 2>&1
        else
            "$python" -m glue_lora.cli sweep "${sweep[@]}" --output-root "$dir" --backend ray --cpus-per-run 1 > "$dir.log" 2>&1
        fi
        wall=$("$python" -c "import time; print(round(time.time() - $start, 1))")
        runs=$("$python" -c "import json; s = json.load(open('$dir/sweep-status.json')); r = s['runs']; \
print(len([x for x in r if x['status'] == 'success']), round(sum(x['seconds'] for x in r), 1))")
        echo "$backend round $round: wall $wall s; successful runs, sum of run times: $runs s; load $(cut -d' ' -f1-3 /proc/loadavg)"
    done
done
