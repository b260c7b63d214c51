#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with a GPU and PyTorch + Triton already installed (nothing is
# installed or downloaded here): the Triton LIF kernels' parity tests compiled for the GPU, then the LIF and
# training-step tables in fp32 and fp16 AMP. Run from the repository root; results also land in ${OUT:-runs/gpu}.
#
#     bash bench/gpu_check.sh            # about 5 minutes on one recent GPU
set -uo pipefail
out="${OUT:-runs/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
"$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
# parity on the GPU: the same tests that run in Triton's interpreter on the CPU (TRITON_INTERPRET stays unset)
"$py" -m pytest -q -p no:cacheprovider --rootdir=. -o addopts="" tests/operators/test_operators_cuda_lif.py tests/train/test_train_lif_backend.py 2>&1 | tee "$out/parity.txt"
"$py" bench/gpu.py --reps 20 --json "$out/gpu_fp32.json" 2>&1 | tee "$out/gpu_fp32.txt"
"$py" bench/gpu.py --skip-lif --amp fp16 --reps 20 --json "$out/gpu_fp16.json" 2>&1 | tee "$out/gpu_fp16.txt"
