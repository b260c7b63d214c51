#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with a GPU and PyTorch + Triton already installed (nothing is
# installed or downloaded here): the parity tests of the Triton LIF and unit kernels compiled for the GPU, the
# LIF table, then the ResNet-19 training-step table in fp32, fp16 AMP and bf16 AMP against the cuDNN ANN floor.
# Run from the repository root; results also land in ${OUT:-runs/gpu}.
#
#     bash bench/gpu_check.sh                                  # about 5 minutes on one recent GPU
#     CONFIGS="1,32,4 1,64,4" IMPLS=tdbn,tdbn-units-triton,floor,floor-compiled bash bench/gpu_check.sh
set -uo pipefail
out="${OUT:-runs/gpu}"
configs="${CONFIGS:-1,32,4 0.25,32,4}"  # width,N,T; the goals are stated at width 1, N 32, T 4
impls="${IMPLS:-tdbn,tdbn-units-triton,floor,spikingjelly}"  # add *-compiled: minutes of compiling
reps="${REPS:-20}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
"$py" -c "import torch, triton; c = torch.cuda.is_available()
print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', c, torch.cuda.get_device_name() if c else '')" \
    | tee "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$out/env.txt" 2>/dev/null
# parity on the GPU: the same tests that run in Triton's interpreter on the CPU (TRITON_INTERPRET stays unset)
"$py" -m pytest -q -p no:cacheprovider --rootdir=. -o addopts="" tests/operators/test_operators_cuda_lif.py tests/operators/test_operators_cuda_units.py \
    tests/operators/test_operators_opcheck.py 2>&1 | tee "$out/parity.txt"
"$py" bench/gpu.py --skip-step --reps "$reps" --json "$out/gpu_lif.json" 2>&1 | tee "$out/gpu_lif.txt"
for amp in fp32 fp16 bf16; do
    flag=()
    [ "$amp" != fp32 ] && flag=(--amp "$amp")
    # shellcheck disable=SC2086  # $configs: one word per width,N,T triple
    "$py" bench/gpu.py --skip-lif "${flag[@]}" --configs $configs --impls "$impls" --reps "$reps" \
        --json "$out/gpu_step_$amp.json" 2>&1 | tee "$out/gpu_step_$amp.txt"
done
