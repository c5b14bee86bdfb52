#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (GPU leases are short): the cuda-marked tests (log-mel, multi-stream
# recognition and mixed-precision training on the GPU) and the GPU figures of `drsn-asr bench --gpu-only`.
# Usage: pipelines/gpu_checks.sh OUT_DIR   (PYTHON=... picks the interpreter; default python3)
set -u
out=${1:?usage: pipelines/gpu_checks.sh OUT_DIR}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
$py -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
timeout 240 $py -m pytest -q -m cuda -p no:cacheprovider tests/test_features.py tests/test_multistream.py \
    tests/test_train.py 2>&1 | tee "$out/cuda_tests.log"
timeout 360 $py -m drsn_asr.cli bench --device cuda --gpu-only --json "$out/gpu-bench.json" 2>&1 | tee "$out/gpu-bench.log"
