#!/usr/bin/env bash
# Make the side environments in which the simulators that are not tdbn test dependencies run:
#   bash bench/consumer_envs.sh            # -> .consumer-venvs/{norse,spikingjelly,neurobench}/ (ignored by git)
#   TDBN_NORSE_PYTHON=.consumer-venvs/norse/bin/python \
#   TDBN_SPIKINGJELLY_PYTHON=.consumer-venvs/spikingjelly/bin/python pytest tests/export/test_export_consumers.py
# (tests/export/test_export_consumers.py: Norse and SpikingJelly; tests/analysis/test_analysis_ops.py: NeuroBench.)
#
# Each side environment shares the project's environment instead of copying it: a .pth file puts the project's
# site-packages at the END of the side environment's sys.path, so torch (and numpy, nir, ...) come from there
# unless the side environment installs a version of its own, which then shadows the shared one. pip sees the shared
# packages as installed, so it neither copies torch (0.8 GB) nor pulls another build of it; `--upgrade-strategy
# eager` still gives every other requirement the version a fresh environment would get (pip installs it into the
# side environment; it never touches the project's). Three side environments take about 0.2 GB instead of 3.9 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${CONSUMER_VENVS:-.consumer-venvs}"  # tests/side_envs.py looks in .consumer-venvs
py="${PYTHON:-.venv/bin/python}"  # the project's environment: the one the side environments share
mkdir -p "$root"
shared=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
torch_version=$("$py" -c "import torch; print(torch.__version__.split('+')[0])")
echo "torch==$torch_version" > "$root/constraints.txt"

make_env() {
  local pkg=$1 env="$root/$1"
  # an environment made by an earlier version of this script holds a copy of torch of its own: made anew
  if compgen -G "$env/lib/python*/site-packages/torch" > /dev/null; then rm -rf "$env"; fi
  [ -x "$env/bin/python" ] || "$py" -m venv --without-pip "$env"
  local site
  site=$("$env/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$shared" > "$site/_tdbn_shared_env.pth"
  # the shared environment's pip, run by the side environment's Python, installs into the side environment
  "$env/bin/python" -m pip install -q --disable-pip-version-check -U --upgrade-strategy eager \
      -c "$root/constraints.txt" "$pkg" nir nirtorch
  "$env/bin/python" -c "import $pkg, nir, nirtorch, torch; print('$pkg', getattr($pkg, '__version__', ''), 'nir', nir.__version__, 'torch', torch.__version__, 'from', torch.__file__.rsplit('/torch/', 1)[0])"
}

# the three are independent: made side by side (network and unpacking overlap), each logging to its own file
pids=()
for pkg in norse spikingjelly neurobench; do
  make_env "$pkg" > "$root/$pkg.log" 2>&1 &
  pids+=($!)
done
status=0
for i in 0 1 2; do
  pkg=$(echo norse spikingjelly neurobench | cut -d' ' -f$((i + 1)))
  if wait "${pids[$i]}"; then tail -n 1 "$root/$pkg.log"; else status=1; echo "$pkg: failed, see $root/$pkg.log"; cat "$root/$pkg.log"; fi
done
exit $status
