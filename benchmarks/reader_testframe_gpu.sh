#!/usr/bin/env bash
# Does training on photos framed like the official test photos help read the other test photos?
#
# Seven reader runs side by side on one GPU. Each is the two GPU steps of the cross-validation
# recipe (docs/reader.md), started from the shipped reader's networks (which never saw a test_*
# photo): a new heatmap localiser, then the reader alone with hard negatives mined on it.
#   ctrl-s0, ctrl-s1   the recipe: no test_* photo is trained on
#   odd-s0, odd-s1     also train on the odd-numbered test_* photos; scored on the even ones
#   even-s0, even-s1   also train on the even-numbered ones; scored on the odd ones
#   all-s0             trains on every photo (the one to ship if the others show a gain)
# Each run's last.pt and best.pt come back as float16 readers (the shipped format) in four tars,
# the logs and histories in a fifth.
# Then, on the CPU, score each on the half of the test photos it never saw:
#
#   python benchmarks/reader_accuracy.py --model runs/testframe_gpu/odd-s0-last.pt \
#       --files 'test_*[02468].png' --digit-model runs/digits_noreader --no-clutter --walls 0
#
# Usage: bash benchmarks/reader_testframe_gpu.sh DATA OUT [MINUTES_PER_STEP]
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then   # the comment above is the help
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
DATA=${1:?usage: DATA OUT [MINUTES]}
OUT=${2:?usage: DATA OUT [MINUTES]}
MIN=${3:-2}
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu SYNTHETIC=200 HARD=50 for a dry run
SYNTHETIC=${SYNTHETIC:-12000}
HARD=${HARD:-3000}
RUNS=$(mktemp -d)
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
start=$(date +%s)

python3 - "$SYNTHETIC" "$HARD" <<'EOF'
import sys
import torch
torch.set_num_threads(1)
from housenum.data.download import cache_dir
from housenum.train_reader import synthetic_tensors
for n_empty in (0, min(3000, int(sys.argv[2]))):  # the two steps' synthetic pools, drawn once for all runs
    synthetic_tensors(int(sys.argv[1]), n_empty, seed=1, cache=cache_dir() / "reader", workers=16)
EOF
echo "synthetic photos ready after $(( $(date +%s) - start )) s"

run() {
  local name=$1; shift
  local common=(--data "$DATA" --device "$DEVICE" --epochs 100000 --synthetic "$SYNTHETIC" --threads 2 --workers 1 "$@")
  python3 -m housenum.cli train-reader "${common[@]}" --init src/housenum/weights/reader.pt --arch heatmap \
      --new-localizer --localizer-only --minutes "$MIN" --eval-every 20 --batch-size 128 --lr 2e-3 \
      --loc-zoom 0.5 1.25 --loc-shift 0.15 --synthetic-empty 0 --out "$RUNS/$name-loc" > "$RUNS/$name.log" 2>&1
  python3 -m housenum.cli train-reader "${common[@]}" --init "$RUNS/$name-loc/last.pt" --reader-only \
      --hard-negatives "$HARD" --minutes "$MIN" --eval-every 10 --batch-size 64 --lr 5e-4 \
      --synthetic-empty "$(( HARD < 3000 ? HARD : 3000 ))" --out "$RUNS/$name" >> "$RUNS/$name.log" 2>&1
  cp "$RUNS/$name/history.csv" "$RUNS/$name-history.csv"
}

run ctrl-s0 --seed 0 &
run ctrl-s1 --seed 1 &
run odd-s0 --seed 0 --holdout 'test_*[02468].png' &
run odd-s1 --seed 1 --holdout 'test_*[02468].png' &
run even-s0 --seed 0 --holdout 'test_*[13579].png' &
run even-s1 --seed 1 --holdout 'test_*[13579].png' &
run all-s0 --seed 0 --holdout '' &
wait
echo "runs done after $(( $(date +%s) - start )) s"
set +e   # from here on, bring back whatever the runs left
(cd "$RUNS" && tar -cf "$OUT/logs.tar" ./*.log ./*-history.csv)   # at most 8 files come back from a GPU machine
(cd "$RUNS" && grep -H "photos:\|hard negatives:\|time budget\|best validation\|Error" ./*.log)

python3 - "$RUNS" <<'EOF'
import sys
from pathlib import Path
from housenum.train_reader import ship_reader
runs = Path(sys.argv[1])
for run in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.endswith("-loc")):
    for which in ("last", "best"):
        if (run / f"{which}.pt").exists():
            ship_reader(run / f"{which}.pt", runs / "out" / f"{run.name}-{which}.pt", card={}, onnx=False)
EOF
cd "$RUNS/out" && for group in ctrl odd even all; do tar -cf "$OUT/$group.tar" "$group"-*.pt; done
echo "all done after $(( $(date +%s) - start )) s"
