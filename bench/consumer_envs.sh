#!/usr/bin/env bash
# Make the side environments in which tests/export/test_export_consumers.py runs Norse and SpikingJelly:
#   bash bench/consumer_envs.sh            # -> .consumer-venvs/{norse,spikingjelly}/ (ignored by git)
#   TDBN_NORSE_PYTHON=.consumer-venvs/norse/bin/python \
#   TDBN_SPIKINGJELLY_PYTHON=.consumer-venvs/spikingjelly/bin/python pytest tests/export/test_export_consumers.py
# Each gets the torch already used here (installed first, then pinned by a constraints file, so no other build is
# pulled in), then the simulator with nir and nirtorch. NeuroBench (tests/analysis/test_analysis_ops.py) likewise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.consumer-venvs
py="${PYTHON:-.venv/bin/python}"  # the project's environment: its torch is the one the side environments get
mkdir -p "$root"
torch_version=$("$py" -c "import torch; print(torch.__version__.split('+')[0])")
echo "torch==$torch_version" > "$root/constraints.txt"
for pkg in norse spikingjelly neurobench; do
  [ -x "$root/$pkg/bin/pip" ] || "$py" -m venv "$root/$pkg"
  "$root/$pkg/bin/pip" install -q "torch==$torch_version"
  "$root/$pkg/bin/pip" install -q -c "$root/constraints.txt" "$pkg" nir nirtorch
  "$root/$pkg/bin/python" -c "import $pkg, nir, nirtorch, torch; print('$pkg', $pkg.__version__ if hasattr($pkg, '__version__') else '', 'nir', nir.__version__, 'torch', torch.__version__)"
done
