#!/usr/bin/env bash
# The main job end to end on the embedded default (generated data, config stereonet_synthetic):
# pack -> float -> calibration -> QAT -> int_infer -> predict every stage -> export/check ->
# compile --validate -> infer on a pair -> one summary table.
#
#   bash examples/quickstart.sh            # 11-26 min on 2 idle CPU cores (7-18 of them float)
#   FAST=1 bash examples/quickstart.sh     # a smoke run of the same chain in a few minutes
#   SEED=1 bash examples/quickstart.sh     # another training seed, in runs/stereonet_synthetic_seed1
#
# Everything goes under runs/stereonet_synthetic/ (RUN_DIR) and data/scenes_lmdb/ (FAST:
# runs/stereonet_synthetic_fast/ and data/scenes_lmdb_fast/).
set -euo pipefail

# OpenMP threads that spin while waiting slow training down badly on a busy 2-core machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# FAST packs fewer scenes: its own data folder, so a later full run never trains on them. The
# folder is named by the generator (data.synthetic.kind: scenes), so data packed by an earlier
# quick start from the planes generator (data/synthetic_lmdb) is never taken for it.
DATA=${DATA:-data/scenes_lmdb${FAST:+_fast}}
NAME=stereonet_synthetic
SETS=(--set "data.source=lmdb" --set "data.lmdb_dir=$DATA")
if [[ -n "${SEED:-}" ]]; then
    # The training seed (weights, batches, crops); the generated scenes stay the same.
    NAME="stereonet_synthetic_seed$SEED"
    SETS+=(--set "seed=$SEED" --set "name=$NAME")
fi
if [[ -n "${FAST:-}" ]]; then
    NAME="${NAME}_fast"
    SETS+=(--set "name=$NAME")
fi
RUN=runs/$NAME
PACK=()
if [[ -n "${FAST:-}" ]]; then
    # Same chain, smaller everything: for checking an installation, not for accuracy.
    SETS+=(--set data.synthetic.train_count=64 --set data.synthetic.val_count=8
           --set stages.float.epochs=2 --set stages.float.scheduler.warmup_epochs=0
           --set stages.calibration.batches=2)
    PACK=(--count 64)
fi

# Each step's wall time, printed after the summary (and saved as $RUN/quickstart_times.tsv).
STEP_NAMES=() STEP_SECONDS=() STARTED=$SECONDS
step() {
    [[ ${#STEP_NAMES[@]} -gt 0 ]] && STEP_SECONDS+=($((SECONDS - STEP_STARTED)))
    STEP_NAMES+=("$*") STEP_STARTED=$SECONDS
    printf '\n\033[1;34m==> %s\033[0m\n' "$*"
}
step_times() {
    STEP_SECONDS+=($((SECONDS - STEP_STARTED)))
    printf '\n%-45s %7s\n' "step" "seconds"
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-45s %7d\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
        printf '%s\t%d\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"  >&3
    done 3> "$RUN/quickstart_times.tsv"
    printf '%-45s %7d\n' "total" $((SECONDS - STARTED))
}

step "FLOPs and parameters of the model"
stereoq calops "${SETS[@]}" --height 192 --width 384

step "Pack generated scenes into LMDB"
[[ -d "$DATA/train_lmdb" ]] || stereoq pack --source synthetic --split-name train \
    --num-workers 2 --target-data-dir "$DATA" "${PACK[@]}" "${SETS[@]}"
VAL_PACK=()
[[ -n "${FAST:-}" ]] && VAL_PACK=(--count 8)
[[ -d "$DATA/test_lmdb" ]] || stereoq pack --source synthetic --split-name test \
    --num-workers 2 --target-data-dir "$DATA" "${VAL_PACK[@]}" "${SETS[@]}"

for stage in float calibration qat int_infer; do
    step "Train stage $stage"
    # A rerun continues a training stage's run (an interrupted one resumes; a finished one has
    # nothing left to do) instead of refusing to replace it.
    RESUME=()
    [[ -f "$RUN/$stage/last.pt" ]] && RESUME=(--resume)
    stereoq train --stage "$stage" "${SETS[@]}" "${RESUME[@]}"
done

step "Accuracy of every stage against OpenCV SGBM"
stereoq predict --stage all --baseline sgbm "${SETS[@]}"

step "Deploy the integer model on ONNX Runtime"
# export and compile --validate stop the quick start unless the deployed model gives the
# integer model's disparity (99 % of pixels within 1 px) and the same EPE and D1.
stereoq export --stage int_infer "${SETS[@]}"
stereoq check --stage int_infer "${SETS[@]}"
stereoq compile --stage int_infer --validate "${SETS[@]}"

step "Depth from a stereo pair"
python -c "
import cv2
from stereoq.data.synthetic import render_pair
left, right, _ = render_pair(seed=7, index=0, height=192, width=384, max_disp=64.0)
cv2.imwrite('$RUN/pair_left.png', left[..., ::-1])
cv2.imwrite('$RUN/pair_right.png', right[..., ::-1])
"
stereoq infer --imgl "$RUN/pair_left.png" --imgr "$RUN/pair_right.png" \
    --baseline 0.54 --f 1050 --save-path "$RUN/infer" --stage int_infer "${SETS[@]}"

step "Summary"
python "$(dirname "$0")/summary.py" "$RUN"
step_times
