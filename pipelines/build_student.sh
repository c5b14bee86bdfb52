#!/usr/bin/env bash
# One full chain of the distilled speech-embedding student (docs/experiments/student_embedding.md), from the
# cached teacher views to one drsn-asr checkpoint that carries its own CNN; about 2.5 hours on 2 CPU cores.
#   1. the student CNN, 12 epochs against the teacher's embeddings and the shipped head's posteriors;
#   2. a head of the `default` recipe trained on the student's frames (recipe seed 0: the example cache it reads);
#   3. both fine-tuned together, 6 epochs;
#   4. the real-voice validation streams (presets chosen on them: development figures) and the packaged checkpoint.
# Needs what `drsn-asr train --config configs/embedding_unknown.yaml --seed 0` builds first: the corpus
# (pipelines/build_corpus.py) and that recipe's cached views (data/cache/<key>_speech_embedding_views.pt; the
# training may be stopped once the file exists). Ship the result with
#   python pipelines/ship.py OUT_DIR/student.pt --config configs/embedding_unknown.yaml
# Usage: pipelines/build_student.sh SEED OUT_DIR   (PYTHON=... picks the interpreter, default python3; WIDTHS=... the
# student's channels per block, default 16,32,48,96,96 as `default`'s)
# A step that finished (its marker OUT_DIR/<step>.done exists) is skipped, so a chain split over sessions (2.5 hours
# do not fit beside rebuilding the corpus and cache on a fresh checkout) goes on from the last step kept, e.g. a
# committed cnn.pt with cnn.done. (An interrupted step leaves its checkpoint of the last epoch but no marker.)
set -euo pipefail
seed=${1:?usage: pipelines/build_student.sh SEED OUT_DIR}
out=${2:?usage: pipelines/build_student.sh SEED OUT_DIR}
py=${PYTHON:-python3}
widths=${WIDTHS:-16,32,48,96,96}
d=("$py" "$(dirname "$0")/experiments/distill_embedding.py")
mkdir -p "$out"
step() {  # step NAME COMMAND...: run it unless it finished before, its output in OUT_DIR/NAME.log
    local name=$1
    shift
    [ -e "$out/$name.done" ] && { echo "$name: done before ($out/$name.done)"; return; }
    "$@" 2>&1 | tee "$out/$name.log"
    touch "$out/$name.done"
}
step cnn "${d[@]}" train --seed "$seed" --epochs 12 --bf16 --widths "$widths" --out "$out/cnn.pt"
step cnn_head "${d[@]}" head "$out/cnn.pt" --seed 0 --out-dir "$out/cnn_head"
step joint "${d[@]}" joint "$out/cnn.pt" --head "$out/cnn_head/best.pt" --seed "$seed" --epochs 6 --bf16 \
    --out "$out/joint.pt" --head-out-dir "$out/joint_head"
step validation "${d[@]}" eval "$out/joint.pt" --model "$out/joint_head/best.pt" --split validation \
    --json "$out/validation.json"
"${d[@]}" package "$out/joint.pt" --model "$out/joint_head/best.pt" --out "$out/student.pt"
