#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (GPU leases are short): the cuda-marked tests (log-mel, the decision
# rule, multi-stream recognition and mixed-precision training on the GPU), where a hop of many streams goes with the
# decision rule on the host and on the GPU (streams_profile), and the GPU figures of `drsn-asr bench --gpu-only`.
# Each part has its own time limit and writes its log as it goes, so a lease cut short still brings back the parts
# done. Usage: pipelines/gpu_checks.sh OUT_DIR [BENCH_MODEL]   (PYTHON=... picks the interpreter; default python3)
set -u
out=${1:?usage: pipelines/gpu_checks.sh OUT_DIR [BENCH_MODEL]}
bench_model=${2:-default}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
$py -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
timeout 240 $py -m pytest -q -m cuda -p no:cacheprovider tests/test_features.py tests/test_decision.py \
    tests/test_multistream.py tests/test_train.py 2>&1 | tee "$out/cuda_tests.log"
for model in logmel default; do
    timeout 120 $py pipelines/experiments/streams_profile.py --device cuda --model $model --streams 16384 --hops 11 \
        2>&1 | head -n 8 | tee "$out/streams_profile_$model.log"
done
timeout 420 $py -m drsn_asr.cli bench --device cuda --gpu-only --model "$bench_model" \
    --json "$out/gpu-bench-$bench_model.json" 2>&1 | tee "$out/gpu-bench-$bench_model.log"
