"""The ``tdbn`` command on the core install (torch, numpy, pyyaml, tqdm): the extras are hidden from a subprocess.

A ``sitecustomize`` module on ``PYTHONPATH`` makes every import of an optional package fail as if it were not
installed; ``tdbn --help`` and ``tdbn presets`` must work, MNIST trains and evaluates, and each subcommand that
needs an extra says which ``pip install 'tdbn[...]'`` to run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_run import SRC, cli_env

EXTRAS = ("matplotlib", "sklearn", "PIL", "nir", "nirtorch", "snntorch", "onnx", "onnxruntime", "tensorboard",
          "triton")

BLOCKER = f'''
import sys

HIDDEN = {set(EXTRAS)!r}


class HideExtras:
    """Wraps an import finder: the optional packages are not found, exactly as if they were not installed."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [HideExtras(finder) for finder in sys.meta_path]
'''


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    folder = tmp_path_factory.mktemp("core")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = cli_env(PYTHONPATH=os.pathsep.join((str(folder), str(SRC))))  # the blocker, then this checkout

    def tdbn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tdbn.cli", *args], env=env, cwd=folder, capture_output=True,
                              text=True, timeout=300)

    tdbn.env = env  # type: ignore[attr-defined]
    tdbn.folder = folder  # type: ignore[attr-defined]
    return tdbn


def test_the_extras_are_really_hidden(core):
    for module in EXTRAS:
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], env=core.env, capture_output=True,
                               text=True, timeout=60)
        assert probe.returncode != 0 and "No module named" in probe.stderr, module


def test_help_and_presets_work(core):
    out = core("--help")
    assert out.returncode == 0 and "train" in out.stdout and "export" in out.stdout, out.stderr
    out = core("presets")
    assert out.returncode == 0 and "mnist" in out.stdout and "cifar10_resnet19_t4" in out.stdout, out.stderr


DRIVER = """
import contextlib, io, json, sys
from tdbn.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as exc:  # a traceback would escape the CLI: report it
            rc, err = "raised", io.StringIO(repr(exc))
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def test_mnist_trains_and_each_extra_is_named(core):
    rng = np.random.default_rng(0)
    npz = core.folder / "mnist.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), y_train=np.arange(64) % 10,
             x_test=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), y_test=np.arange(32) % 10)
    run, f = core.folder / "run", core.folder
    commands = [
        (["train", "mnist", f"data.root={npz}", "model.width=0.0625", "model.timesteps=2", "optim.epochs=1",
          "optim.batch_size=32", "progress=false", f"run_dir={run}"], 0, "test accuracy"),
        (["eval", str(run), "--quiet"], 0, "top-1"),
        (["train"], 2, "pip install 'tdbn[train]'"),  # the embedded digits demo needs scikit-learn
        (["export", str(run), str(f / "m.onnx"), "--format", "onnx"], 2, "pip install 'tdbn[onnx]'"),
        (["export", str(run), str(f / "m.nir"), "--format", "nir"], 2, "pip install 'tdbn[export]'"),
        (["analyze", "membrane", "--neurons", "100", "--out", str(f / "m")], 2, "pip install 'tdbn[plot]'"),
        (["analyze", "ops", "--checkpoint", str(run), "--num-images", "2"], 2, "pip install 'tdbn[plot]'"),
        (["train", "cifar10_resnet19_cpu", f"data.root={f / 'cifar'}"], 2, f"{f / 'cifar'}: not found"),
    ]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([c[0] for c in commands])], env=core.env,
                          cwd=f, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for (argv, rc, text), got in zip(commands, json.loads(proc.stdout.splitlines()[-1])):
        assert got["rc"] == rc, (argv, got)
        assert text in (got["out"] if rc == 0 else got["err"]), (argv, got)
    assert not (f / "m.json").exists() and not (run / "analysis").exists()  # the missing extra stops them first
