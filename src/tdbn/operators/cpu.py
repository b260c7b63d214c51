"""Compiled CPU kernels for the LIF time loops and tdBN: the fast path of eager training on CPU tensors.

- LIF (:func:`integrate`, :func:`bptt`): the reference loops (:mod:`tdbn.operators.recursions`) launch a few
  whole-tensor operations per time step, each reading and writing memory. ``cpu_kernels.c`` runs a neuron's whole
  time loop in one pass instead (a block of neurons keeps its state in cache while the loop walks over ``T``),
  with the same floating-point operations in the same order: bit-identical to the ATen loops for float32,
  float64 and bfloat16 with the rectangle surrogate (Eq. 16), tested; the other surrogates agree to float
  rounding.
- tdBN in training mode (:class:`tdbn.operators.batch_norm.TdBatchNormFunction`, Eq. 5-8): statistics in two
  reading passes (float64 accumulators), the normalized output in one pass, and the backward pass in two (the
  per-channel gradient sums, then the input gradient), where the ATen formulation makes about ten. The same
  mathematics, equal to the ATen path up to float rounding (tested).
- The training units of :mod:`tdbn.operators.unit_ops` (:func:`unit_forward`, :func:`unit_backward`): the tdBN
  output (or the junction's sum of two), and the LIF, in one pass without writing ``y`` or ``u``; the backward
  pass recomputes both per block of neurons with the forward pass's operations (so the same ``u``, bit for
  bit), walks BPTT and sums what the tdBN backward pass needs. These and the tdBN kernels read bfloat16 tensors
  directly (computed in float32, as their float32 copy would be, bit for bit; the input gradient is rounded
  once), so a unit under autocast makes no float32 copy of its input or gradients.

The C file is compiled on first use with the system C compiler (``$CC``, default ``cc``; about a second)
into a cache directory (``$TDBN_CACHE_DIR``, default ``~/.cache/tdbn``), keyed by the source, the compiler and
the CPU, and loaded with :mod:`ctypes`. Without a compiler the reference runs (same results, slower) after one
warning. ``TDBN_NATIVE=0`` in the environment, or :func:`tdbn.operators.use_reference`, turns the kernels off
(:func:`available`, which :func:`tdbn.operators.kernels.for_cpu` reads).

The entry points are those of :mod:`tdbn.operators.cuda_units` and :mod:`tdbn.operators.reference`, with the same
arguments: the operators' CPU registrations call them. Each works out the layout of its operand and checks every
operand before a pointer reaches C. :func:`integrate`, :func:`bptt`, :func:`pack_bits` and :func:`unpack_bits`
run the reference themselves for operands the kernels cannot index (time-major, dense, every operand with the
same strides: contiguous and channels-last both qualify); for the tdBN and unit kernels the caller asks
:func:`indexes` first.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections import Counter
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from .surrogate import SURROGATE_IDS  # the one table shared by every implementation
from . import recursions, reference

Tensor = torch.Tensor

SOURCE = Path(__file__).with_name("cpu_kernels.c")
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-fno-math-errno", "-std=c11", "-fPIC", "-shared"]
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
#: The arithmetic of the tdBN and unit kernels per storage dtype: bfloat16 values are read as float32 (exactly)
#: and computed in float32; their per-channel vectors and the output gradients they read are float32.
COMPUTE = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32}

#: How many times each entry point of the compiled kernels ran in this process (the sentinel tests read it).
calls: Counter[str] = Counter()

_enabled = os.environ.get("TDBN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")
_lib: ctypes.CDLL | None = None
_error: str | None = None
_warned_float16 = False


@contextmanager
def enabled(flag: bool):
    """Inside the block, the compiled kernels are on (``True``) or off (``False``: the reference runs on the CPU);
    what :func:`tdbn.operators.use_reference` sets.

    Example:
        >>> from tdbn.operators import cpu as native
        >>> with native.enabled(False):
        ...     s = tdbn.functional.lif(torch.ones(3, 2))  # the reference loops
    """
    global _enabled
    before = _enabled
    _enabled = bool(flag)
    try:
        yield
    finally:
        _enabled = before


def cache_dir() -> Path:
    root = os.environ.get("TDBN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tdbn")
    return Path(root) / "kernels"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


#: least work (elements) for which a kernel wakes the other threads: with spinning OpenMP threads (the default
#: wait policy) a parallel region starts in microseconds and 2 threads win from 64K elements on; with
#: OMP_WAIT_POLICY=PASSIVE (what the ``tdbn`` command sets) the sleeping threads take 50-100 us to wake on the
#: 2-core development machine, and 2 threads win only from about 512K elements (``bench/unit_threads.py``
#: prints both tables).
MIN_PARALLEL_WORK = {"spin": 32768, "passive": 524288}


def min_parallel_work() -> int:
    """The threshold for this process: ``$TDBN_MIN_PARALLEL_WORK`` if set, else by ``$OMP_WAIT_POLICY`` (read,
    like OpenMP reads it, from the environment the process started with)."""
    value = os.environ.get("TDBN_MIN_PARALLEL_WORK", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"TDBN_MIN_PARALLEL_WORK={value!r} is not a whole number of elements; set it to "
                             "e.g. 524288, or unset it to follow OMP_WAIT_POLICY") from None
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    return MIN_PARALLEL_WORK["passive" if passive else "spin"]


def _compile() -> ctypes.CDLL:
    cc = os.environ.get("CC", "cc")
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *CFLAGS]).encode() + _cpu_signature().encode()).hexdigest()[:16]
    out = cache_dir() / f"native-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)  # compile beside, then rename: atomic
        os.close(fd)
        try:
            proc = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise OSError(f"{cc} failed: {proc.stderr.strip()[-2000:]}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    i64, dbl, ptr, i32 = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
    lib.tdbn_lif_forward.argtypes = [i32, ptr, i64, ptr, ptr, i64, i64, dbl, dbl, i32]
    lib.tdbn_lif_forward.restype = i32
    lib.tdbn_lif_backward.argtypes = [i32, ptr, ptr, ptr, i64, i64, dbl, dbl, dbl, i32, i32]
    lib.tdbn_lif_backward.restype = i32
    lib.tdbn_bn_stats.argtypes = [i32, ptr, i64, i64, i64, ptr, ptr, ptr, i32]
    lib.tdbn_bn_grad_sums.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, ptr, ptr, i32]
    lib.tdbn_bn_sums.argtypes = [i32, ptr, i64, i64, i64, ptr, ptr, i32]
    lib.tdbn_bn_affine.argtypes = [i32, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i32]
    lib.tdbn_bn_grad_input.argtypes = [i32, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i32]
    lib.tdbn_unit_forward.argtypes = [i32, i32, *[ptr] * 9, i64, i64, i64, i64, dbl, dbl, i32]
    lib.tdbn_unit_backward.argtypes = [i32, i32, *[ptr] * 10, i64, i64, i64, i64, dbl, dbl, dbl, i32, ptr, ptr, i32]
    lib.tdbn_pack_bits.argtypes = [i32, ptr, ptr, i64, i32]
    lib.tdbn_unpack_bits.argtypes = [i32, ptr, ptr, i64, i32]
    for fn in (lib.tdbn_pack_bits, lib.tdbn_unpack_bits, lib.tdbn_bn_stats, lib.tdbn_bn_sums, lib.tdbn_bn_grad_sums, lib.tdbn_bn_affine, lib.tdbn_bn_grad_input,
               lib.tdbn_unit_forward, lib.tdbn_unit_backward):
        fn.restype = i32
    lib.tdbn_parallel_regions.argtypes = []
    lib.tdbn_parallel_regions.restype = i64
    lib.tdbn_set_min_parallel_work.argtypes = [i64]
    lib.tdbn_set_min_parallel_work.restype = None
    lib.tdbn_set_min_parallel_work(min_parallel_work())
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernels (compiled and loaded on first call), or None when they cannot be built."""
    global _lib, _error
    if _lib is None and _error is None:
        try:
            _lib = _compile()
        except (OSError, subprocess.SubprocessError) as err:  # no compiler, read-only cache, ...
            _error = str(err) or type(err).__name__
            warnings.warn(
                f"tdbn: the compiled CPU LIF kernels are unavailable ({_error}); using the ATen loops (same "
                "results, slower). Install a C compiler (or set CC), or set TDBN_NATIVE=0 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _lib


def parallel_regions() -> int:
    """How many multi-threaded regions the compiled kernels have started in this process (0 without them)."""
    return 0 if library() is None else int(_lib.tdbn_parallel_regions())


def available() -> bool:
    """Whether the compiled kernels are enabled and built (building them on first call)."""
    return _enabled and library() is not None


def status() -> str:
    """One line for ``tdbn env``: whether the compiled CPU kernels run, and why not if they do not."""
    if not _enabled:
        return "off (TDBN_NATIVE=0 or use_reference()): reference loops"
    if library() is None:
        return f"unavailable ({_error}): reference loops"
    return (f"on (compiled with {os.environ.get('CC', 'cc')}, cache {cache_dir()}; threads from "
            f"{min_parallel_work()} elements)")


def time_major_dense(t: Tensor) -> bool:
    """Time-major and dense: ``t[t0]`` is one block of ``numel / T`` elements without gaps, in any dimension
    order (contiguous or channels-last), so that kernels can index it as ``t * M + n``."""
    T = t.shape[0]
    if T > 1 and t.stride(0) != t.numel() // T:
        return False
    expected = 1
    for d in sorted(range(1, t.dim()), key=t.stride):
        if t.shape[d] != 1 and t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def usable(*tensors: Tensor | None) -> bool:
    """Whether the LIF kernels can index these operands: CPU, one supported dtype, time-major dense with identical
    strides."""
    ts = [t for t in tensors if t is not None]
    ref = ts[0]
    if ref.device.type != "cpu" or ref.dtype not in DTYPES or ref.numel() == 0:
        return False
    if any(t.device != ref.device or t.dtype != ref.dtype or t.shape != ref.shape or t.stride() != ref.stride() for t in ts):
        return False
    return time_major_dense(ref) and library() is not None


def usable_forward(x: Tensor, *outputs: Tensor | None) -> bool:
    """:func:`usable` for the forward kernel, which also reads an input repeated over time (stride 0 along T,
    as a static image's encoding expanded to T steps) whose steps are laid out like the outputs."""
    if usable(x, *outputs):
        return True
    outs = [o for o in outputs if o is not None]
    if not outs or x.dim() < 2 or x.shape[0] < 2 or x.stride(0) != 0:
        return False
    ref = outs[0]
    if x.shape != ref.shape or x.dtype != ref.dtype or x.device != ref.device or x.stride()[1:] != ref.stride()[1:]:
        return False
    return usable(*outs)


class KernelArgumentError(ValueError):
    """Operands that the compiled kernels cannot index: raised before any pointer reaches C."""


def _guard(what: str, ref: Tensor, *others: Tensor | None, vectors: tuple[Tensor | None, ...] = (),
           channels: int = 0, repeated_input: Tensor | None = None) -> None:
    """Check dtype, device, shape and strides of every operand of a kernel call before entering C: a mismatch
    raises :class:`KernelArgumentError` naming the call and the operand, instead of reading or writing memory
    out of bounds. ``vectors``: per-channel operands (``channels`` elements, contiguous, in ``ref``'s compute dtype)."""
    if ref.device.type != "cpu" or ref.dtype not in DTYPES:
        raise KernelArgumentError(f"{what}: needs a CPU tensor of {sorted(map(str, DTYPES))}, got {ref.dtype} "
                                  f"on {ref.device}")
    if not time_major_dense(ref):
        raise KernelArgumentError(f"{what}: operand of shape {tuple(ref.shape)} and strides {ref.stride()} is not "
                                  "time-major dense")
    for i, t in enumerate(others):
        if t is None:
            continue
        if t.device != ref.device or t.dtype != ref.dtype or t.shape != ref.shape or t.stride() != ref.stride():
            raise KernelArgumentError(
                f"{what}: operand {i + 1} ({t.dtype}, shape {tuple(t.shape)}, strides {t.stride()}) does not match "
                f"the first ({ref.dtype}, shape {tuple(ref.shape)}, strides {ref.stride()})")
    if repeated_input is not None:
        x = repeated_input
        ok = x.shape == ref.shape and x.dtype == ref.dtype and x.device == ref.device and (
            x.stride() == ref.stride() or (x.dim() >= 2 and x.stride(0) == 0 and x.stride()[1:] == ref.stride()[1:]))
        if not ok:
            raise KernelArgumentError(f"{what}: input ({x.dtype}, shape {tuple(x.shape)}, strides {x.stride()}) is "
                                      f"not laid out like the outputs ({ref.dtype}, strides {ref.stride()})")
    for v in vectors:
        if v is not None and (v.numel() != channels or not v.is_contiguous() or v.dtype != COMPUTE[ref.dtype]
                              or v.device != ref.device):
            raise KernelArgumentError(f"{what}: per-channel operand ({v.dtype}, shape {tuple(v.shape)}) must hold "
                                      f"{channels} contiguous {COMPUTE[ref.dtype]} values")


def integrate(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
    """:func:`tdbn.operators.recursions.integrate_reference` in one pass (bit for bit), or the reference itself
    for operands the kernel cannot index (:func:`usable_forward`)."""
    if u is None and spikes is None:
        raise ValueError("integrate: without u, spikes are the only output and must be given")
    if not usable_forward(x, u, spikes):
        recursions.integrate_reference(x, u, tau, v_th, spikes)
        return
    outs = [t for t in (u, spikes) if t is not None]
    if not outs:
        raise KernelArgumentError("tdbn_lif_forward: needs u or spikes to write")
    _guard("tdbn_lif_forward", outs[0], *outs[1:], repeated_input=x)
    calls["lif_forward"] += 1
    T = x.shape[0]
    M = x[0].numel()
    rc = _lib.tdbn_lif_forward(
        DTYPES[x.dtype], x.data_ptr(), x.stride(0) if T > 1 else M, 0 if u is None else u.data_ptr(),
        0 if spikes is None else spikes.data_ptr(), T, M, float(tau), float(v_th), torch.get_num_threads(),
    )
    if rc != 0:  # pragma: no cover - usable() admits only what the kernels handle
        raise RuntimeError(f"tdbn_lif_forward failed for dtype {x.dtype}")


def supports_backward(dtype: torch.dtype, surrogate: str) -> bool:
    """bfloat16 gradients come with the rectangle surrogate only (the others take the ATen loop)."""
    return dtype != torch.bfloat16 or surrogate == "rectangle"


def bptt(grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str, *,
         reuse_u: bool = False) -> Tensor:
    """:func:`tdbn.operators.recursions.bptt_reference` in one pass (``dL/dx``; with ``reuse_u`` written over
    ``u``), or the reference itself for operands or a surrogate the kernel does not take."""
    if not (supports_backward(u.dtype, surrogate) and usable(grad_spikes, u)):
        return recursions.bptt_reference(grad_spikes, u, tau, v_th, width, surrogate, reuse_u=reuse_u)
    grad_x = u if reuse_u else torch.empty_like(u)
    _guard("tdbn_lif_backward", u, grad_spikes, grad_x)
    calls["lif_backward"] += 1
    T = u.shape[0]
    rc = _lib.tdbn_lif_backward(
        DTYPES[u.dtype], grad_spikes.data_ptr(), u.data_ptr(), grad_x.data_ptr(), T, u.numel() // T,
        float(tau), float(v_th), float(width), SURROGATE_IDS[surrogate], torch.get_num_threads(),
    )
    if rc != 0:  # pragma: no cover
        raise RuntimeError(f"tdbn_lif_backward failed for dtype {u.dtype}, surrogate {surrogate!r}")
    return grad_x


# ---------------------------------------------------------------------------------------------------------
# tdBN: x [T, N, C, ...] viewed as [outer, C, inner]

Layout = tuple[int, int, int]


def bn_layout(x: Tensor, *, mixed: bool = False) -> Layout | None:
    """``(outer, C, inner)`` when the kernels can run tdBN on ``x`` [T, N, C, ...] (contiguous or channels-last
    CPU tensors of float32/64, and with ``mixed`` also bfloat16, computed in float32), else None."""
    if x.device.type != "cpu" or x.numel() == 0:
        return None
    if x.dtype not in (COMPUTE if mixed else (torch.float32, torch.float64)) or x.dim() < 3:
        return None
    C = x.shape[2]
    if x.is_contiguous():
        layout = (x.shape[0] * x.shape[1], C, x.numel() // (x.shape[0] * x.shape[1] * C))
    elif x.dim() > 3 and x.movedim(2, -1).is_contiguous():  # channels-last: C innermost
        layout = (x.numel() // C, C, 1)
    else:
        return None
    return layout if library() is not None else None


def indexes(x: Tensor, *, mixed: bool = False) -> bool:
    """Whether the tdBN and unit kernels can index ``x`` (:func:`bn_layout`; ``mixed``: bfloat16 too); the
    callers take the reference's operations otherwise (for float16, said once)."""
    global _warned_float16
    if mixed and x.dtype == torch.float16 and not _warned_float16:
        _warned_float16 = True
        warnings.warn("tdbn: the compiled CPU unit kernels take float32, float64 and bfloat16; these "
                      "torch.float16 units compute through float32 copies (same storage, slower). On the CPU, "
                      "autocast to torch.bfloat16 instead where the CPU has native bf16 (amp=auto picks it).",
                      RuntimeWarning, stacklevel=4)
    return bn_layout(x, mixed=mixed) is not None


def _bn_guard(what: str, x: Tensor) -> Layout:
    """``x``'s layout (:func:`bn_layout`): an operand the kernels cannot index raises before C."""
    layout = bn_layout(x, mixed=True)
    if layout is None:
        raise KernelArgumentError(f"{what}: no layout the kernels index for the operand of shape "
                                  f"{tuple(x.shape)}, dtype {x.dtype} and strides {x.stride()} (see indexes())")
    return layout


def _check(rc: int, what: str) -> None:
    if rc != 0:  # pragma: no cover - bn_layout admits only what the kernels handle
        raise RuntimeError(f"{what} failed")


def _vec(v: Tensor | None, like: Tensor) -> Tensor | None:
    """A per-channel vector in the compute dtype of ``like``."""
    return None if v is None else v.to(COMPUTE[like.dtype]).contiguous()


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _scratch(C: int) -> Tensor:
    return torch.empty(2 * C * max(1, min(torch.get_num_threads(), 64)), dtype=torch.float64)


def _guard_computed(what: str, x: Tensor, *computed: Tensor) -> None:
    """Operands in ``x``'s compute dtype (a float32 gradient of a bfloat16 tensor): ``x``'s shape and strides."""
    for t in computed:
        if (t.dtype != COMPUTE[x.dtype] or t.device != x.device or t.shape != x.shape
                or t.stride() != x.stride()):
            raise KernelArgumentError(
                f"{what}: operand ({t.dtype}, shape {tuple(t.shape)}, strides {t.stride()}) must be "
                f"{COMPUTE[x.dtype]} with the shape and strides of the input ({tuple(x.shape)}, {x.stride()})")


def bn_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance around it (Eq. 6-7), both in ``x``'s compute dtype."""
    outer, C, inner = _bn_guard("tdbn_bn_stats", x)
    calls["bn_stats"] += 1
    mean = torch.empty(C, dtype=COMPUTE[x.dtype])
    var = torch.empty(C, dtype=torch.float64)
    scratch = _scratch(C)  # referenced until the call returns
    rc = _lib.tdbn_bn_stats(
        DTYPES[x.dtype], x.data_ptr(), outer, C, inner, mean.data_ptr(), var.data_ptr(), scratch.data_ptr(),
        torch.get_num_threads(),
    )
    _check(rc, "tdbn_bn_stats")
    return mean, var.to(mean.dtype)


def bn_sums(x: Tensor) -> Tensor:
    """Per-channel ``sum(x)`` and ``sum(x^2)`` in one pass, accumulated and returned in float64 (``[2C]``): one
    process's share of the statistics of a tdBN synchronized across processes."""
    outer, C, inner = _bn_guard("tdbn_bn_sums", x)
    calls["bn_sums"] += 1
    out = torch.empty(2 * C, dtype=torch.float64)
    scratch = _scratch(C)
    rc = _lib.tdbn_bn_sums(DTYPES[x.dtype], x.data_ptr(), outer, C, inner, out.data_ptr(), scratch.data_ptr(),
                           torch.get_num_threads())
    _check(rc, "tdbn_bn_sums")
    return out


def bn_affine(x: Tensor, mean: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``(x - mean) * w + bias`` per channel, each operation rounded; a new tensor with ``x``'s strides, in its
    compute dtype."""
    outer, C, inner = _bn_guard("tdbn_bn_affine", x)
    y = torch.empty_like(x, dtype=COMPUTE[x.dtype])
    mean, w, b = _vec(mean, x), _vec(w, x), _vec(bias, x)
    _guard("tdbn_bn_affine", x, vectors=(mean, w, b), channels=C)
    _guard_computed("tdbn_bn_affine", x, y)
    calls["bn_affine"] += 1
    rc = _lib.tdbn_bn_affine(
        DTYPES[x.dtype], x.data_ptr(), y.data_ptr(), mean.data_ptr(), w.data_ptr(), _ptr(b), outer, C, inner,
        torch.get_num_threads(),
    )
    _check(rc, "tdbn_bn_affine")
    return y


def bn_grad_sums(g: Tensor, x: Tensor, mean: Tensor, *, wide: bool = False) -> tuple[Tensor, Tensor]:
    """Per-channel ``sum(g)`` and ``sum(g * (x - mean))`` (float64 accumulation, returned in ``x``'s compute
    dtype, or in float64 with ``wide``); ``g`` is in that dtype."""
    outer, C, inner = _bn_guard("tdbn_bn_grad_sums", x)
    out = torch.empty(2 * C, dtype=torch.float64)
    mean, scratch = _vec(mean, x), _scratch(C)
    _guard("tdbn_bn_grad_sums", x, vectors=(mean,), channels=C)
    _guard_computed("tdbn_bn_grad_sums", x, g)
    calls["bn_grad_sums"] += 1
    rc = _lib.tdbn_bn_grad_sums(
        DTYPES[x.dtype], g.data_ptr(), x.data_ptr(), mean.data_ptr(), outer, C, inner, out.data_ptr(),
        scratch.data_ptr(), torch.get_num_threads(),
    )
    _check(rc, "tdbn_bn_grad_sums")
    out = out if wide else out.to(COMPUTE[x.dtype])
    return out[:C], out[C:]


def bn_grad_input(
    g: Tensor, x: Tensor, mean: Tensor, k: Tensor, c0: Tensor, cx: Tensor, *,
    out: Tensor | None = None,
) -> Tensor:
    """``(g * k + c0) + (x - mean) * cx`` per channel: the tdBN input gradient in ``x``'s dtype (computed in the
    compute dtype, which ``g`` has, and rounded once), into ``out`` (``x``'s dtype and strides; may be ``g``
    itself, each element is read before it is written) or a new tensor."""
    outer, C, inner = _bn_guard("tdbn_bn_grad_input", x)
    out = torch.empty_like(x) if out is None else out
    mean, k, c0, cx = (_vec(v, x) for v in (mean, k, c0, cx))
    _guard("tdbn_bn_grad_input", x, out, vectors=(mean, k, c0, cx), channels=C)
    _guard_computed("tdbn_bn_grad_input", x, g)
    calls["bn_grad_input"] += 1
    rc = _lib.tdbn_bn_grad_input(
        DTYPES[x.dtype], g.data_ptr(), x.data_ptr(), out.data_ptr(), mean.data_ptr(), k.data_ptr(), c0.data_ptr(),
        cx.data_ptr(), outer, C, inner, torch.get_num_threads(),
    )
    _check(rc, "tdbn_bn_grad_input")
    return out


# ---------------------------------------------------------------------------------------------------------
# the units: a LIF fed by one or two tdBNs

#: ``(mean, w, bias)`` of a tdBN as the unit kernels apply it: ``(z - mean) * w + bias`` per channel.
Affine = tuple[Tensor, Tensor, Tensor | None]


def _unit_operands(what: str, za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None):
    """Checked operands of a unit kernel call: ``(mode, vectors, T, M, C, cdiv)``; ``zb`` None (mode 0), an
    unnormalized second input (``b`` None, mode 1) or a normalized one (mode 2)."""
    outer, C, inner = _bn_guard(what, za)
    mode = 0 if zb is None else (1 if b is None else 2)
    _guard(what, za, zb)
    va = tuple(_vec(v, za) for v in a)
    vb = tuple(_vec(v, za) for v in b) if b is not None else (None, None, None)
    _guard(what, za, vectors=va + vb, channels=C)
    T = za.shape[0]
    return mode, va + vb, T, za.numel() // T, C, inner


def unit_forward(za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None, tau: float, v_th: float) -> Tensor:
    """Spikes (``za``'s dtype and strides) of ``LIF(y)`` with ``y = (za - mean_a) * w_a + bias_a``, plus ``zb``
    (``b`` None) or ``(zb - mean_b) * w_b + bias_b``: no ``[T, ...]`` tensor of ``y`` or ``u`` is written.
    The same operations as :func:`bn_affine`, the addition and :func:`integrate`, in the compute dtype."""
    mode, vecs, T, M, C, cdiv = _unit_operands("tdbn_unit_forward", za, a, zb, b)
    spikes = torch.empty_like(za)
    calls["unit_forward"] += 1
    rc = _lib.tdbn_unit_forward(
        DTYPES[za.dtype], mode, za.data_ptr(), _ptr(zb), *map(_ptr, vecs), spikes.data_ptr(), T, M, C, cdiv,
        float(tau), float(v_th), torch.get_num_threads(),
    )
    _check(rc, "tdbn_unit_forward")
    return spikes


def unit_backward(grad_spikes: Tensor, za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None, tau: float,
                  v_th: float, width: float, surrogate: str, *, sums: bool = False, wide: bool = False):
    """The LIF backward pass of :func:`unit_forward` in one pass: recompute ``y`` and ``u`` per block of neurons
    (the forward pass's operations, so the same ``u``), walk BPTT back in time (Eq. 14-15, 18).

    Returns ``(dL/dy, sums)``: ``dL/dy`` in the compute dtype with ``za``'s strides; with ``sums`` (one input
    only) the per-channel ``(sum(dL/dy), sum(dL/dy * (za - mean_a)))`` the tdBN backward pass needs (float64 with
    ``wide``, else the compute dtype), else None.
    ``grad_spikes`` has ``za``'s dtype and strides.
    """
    mode, vecs, T, M, C, cdiv = _unit_operands("tdbn_unit_backward", za, a, zb, b)
    if sums and mode != 0:
        raise KernelArgumentError("tdbn_unit_backward: the per-channel sums come with one input only")
    _guard("tdbn_unit_backward", za, grad_spikes)
    grad_y = torch.empty_like(za, dtype=COMPUTE[za.dtype])
    out, scratch = (torch.empty(2 * C, dtype=torch.float64), _scratch(C)) if sums else (None, None)
    calls["unit_backward"] += 1
    rc = _lib.tdbn_unit_backward(
        DTYPES[za.dtype], mode, grad_spikes.data_ptr(), za.data_ptr(), _ptr(zb), *map(_ptr, vecs),
        grad_y.data_ptr(), T, M, C, cdiv, float(tau), float(v_th), float(width), SURROGATE_IDS[surrogate],
        _ptr(out), _ptr(scratch), torch.get_num_threads(),
    )
    if rc == -2:
        raise MemoryError("tdbn_unit_backward: out of memory for the per-thread membrane buffers")
    _check(rc, "tdbn_unit_backward")
    if out is None:
        return grad_y, None
    out = out if wide else out.to(grad_y.dtype)
    return grad_y, (out[:C], out[C:])


if sys.platform == "win32":  # pragma: no cover - the build line above is for gcc/clang
    _enabled = False


# ---------------------------------------------------------------------------------------------------------
# spike masks as bits

_PACK_DTYPES = {**DTYPES, torch.bool: 3, torch.uint8: 3}


def pack_bits(x: Tensor) -> Tensor:
    """``x != 0`` as bits, 8 per byte (uint8, ``ceil(numel / 8)`` bytes: :func:`tdbn.operators.reference.pack_bits`)
    in one pass; the reference for a tensor the kernel cannot index (not a contiguous CPU tensor of a supported
    dtype)."""
    if x.device.type != "cpu" or x.dtype not in _PACK_DTYPES or not x.is_contiguous() or library() is None:
        return reference.pack_bits(x)
    n = x.numel()
    bits = torch.empty((n + 7) // 8, dtype=torch.uint8)
    calls["pack_bits"] += 1
    _check(_lib.tdbn_pack_bits(_PACK_DTYPES[x.dtype], x.data_ptr(), bits.data_ptr(), n, torch.get_num_threads()),
           "tdbn_pack_bits")
    return bits


def unpack_bits(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` that :func:`pack_bits` packed (contiguous); the reference for a
    dtype the kernel does not write (it writes float32/64 and bfloat16)."""
    n = 1
    for d in shape:
        n *= d
    if bits.device.type != "cpu" or dtype not in DTYPES or library() is None:
        return reference.unpack_bits(bits, shape, dtype)
    if bits.dtype != torch.uint8 or not bits.is_contiguous() or bits.numel() != (n + 7) // 8:
        raise KernelArgumentError(f"tdbn_unpack_bits: {bits.numel()} {bits.dtype} bytes do not hold {n} bits")
    out = torch.empty(shape, dtype=dtype)
    calls["unpack_bits"] += 1
    _check(_lib.tdbn_unpack_bits(DTYPES[dtype], bits.data_ptr(), out.data_ptr(), n, torch.get_num_threads()),
           "tdbn_unpack_bits")
    return out
