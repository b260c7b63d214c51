#!/usr/bin/env bash
# The converged depth study of docs/analysis.md: residual and plain spiking nets of depth 8-50 with tdBN, standard
# BN and no normalization, 6 epochs of MNIST 14x14 each (3,750 SGD steps, cosine schedule), 2 seeds, 2 processes.
# Resumable: every finished net is a file in docs/figures/depth_converged_runs/; rerun this script to go on.
# About 2 hours of 2 idle CPU cores.   PYTHON=.venv/bin/python bash bench/depth_converged.sh
set -euo pipefail
PY=${PYTHON:-python}
export OMP_WAIT_POLICY=PASSIVE
COMMON=(--dataset mnist --size 14 --per-class 2000 --test-per-class 200 --width 0.125 --timesteps 2 --tau 0.25
        --batch-size 32 --lr 0.1 --schedule cosine --eval-every 625 --threads 1
        --grad-norms resnet-50-tdbn resnet-50-bn resnet-50-none plain-50-tdbn plain-50-bn plain-50-none
        --grad-norm-iterations 104)

# 1. Is the budget enough? The shallowest residual tdBN net at 6 epochs (part of the grid) and at 12 epochs,
#    side by side on the two cores (with the same net's BN twin, so that both cores finish together).
$PY -m tdbn.analysis.cli depth "${COMMON[@]}" --epochs 12 --archs resnet --depths 8 --norms tdbn --seeds 0 \
    --out docs/figures/depth_budget_12ep &
check=$!
$PY -m tdbn.analysis.cli depth "${COMMON[@]}" --epochs 6 --archs resnet --depths 8 --norms tdbn bn --seeds 0 \
    --no-plot --out docs/figures/depth_converged
wait $check

# 2. The grid, most informative nets first (study_order in tdbn.analysis.depth: seed 0 normalized nets, residual then plain, then
#    the unnormalized ones, then seed 1); the two nets above are found and not trained again.
$PY -m tdbn.analysis.cli depth "${COMMON[@]}" --epochs 6 --archs resnet plain --depths 8 20 34 50 \
    --norms tdbn bn none --seeds 0 1 --jobs 2 --out docs/figures/depth_converged
