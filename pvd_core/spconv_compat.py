"""The one place for spconv 2.x (2.3.8) workarounds on the CPU (docs/platform.md).

Three CPU problems of the native algorithm (the only one spconv has on the CPU); none
touches CUDA tensors.

1. Backward needs CUDA -- :func:`ensure_cpu_backward`.
   ``spconv.pytorch.ops.indice_conv_backward`` (the backward of every SubMConv3d /
   SparseConv3d / SparseInverseConv3d) calls ``get_current_stream()``, i.e.
   ``torch.cuda.current_stream().cuda_stream``, unconditionally; a CPU-only torch raises
   "Torch not compiled with CUDA enabled". The stream is only read by the CUDA branch
   further down. Patch: the module-level name ``get_current_stream`` in
   ``spconv.pytorch.ops`` is replaced by a function returning 0, the value spconv itself
   uses for CPU tensors in ``get_indice_pairs``. A no-op whenever
   ``torch.cuda.is_available()`` (CUDA torch answers the call itself), so GPU machines
   run spconv's code as shipped.

2. The CPU scatter-add races -- :func:`ensure_thread_safe_cpu_scatter`.
   ``SpconvOps.scatter_add_cpu`` (every CPU conv forward and backward: gather, GEMM,
   scatter-add per kernel offset) runs an OpenMP loop whose row pointers ``buf`` and
   ``out_ptr`` are declared outside the parallel lambda (spconv/csrc/sparse/gather.py),
   so with more than one OpenMP thread the threads overwrite each other's pointers and
   add rows to the wrong outputs. Measured here with torch's default 2 threads: 46 to
   206 of 300 random 3000 x 16 scatters wrong; with 1 thread none. spconv's OpenMP
   regions bind to the process's loaded OpenMP runtime (torch's libgomp), so the patch
   wraps ``scatter_add_cpu`` (through a stand-in for ``SpconvOps`` in
   ``spconv.pytorch.ops``) to set the calling thread's OpenMP thread count to 1 for the
   call and restore it afterwards; torch's own ops (the GEMMs) keep their threads. Where
   no OpenMP runtime can be found it uses ``torch.Tensor.index_add_`` instead (correct,
   slower). Applied with or without CUDA, since CPU tensors can be used on GPU machines.

3. Eval-mode bias needs CUDA -- :class:`BiasedSubMConv3d` (avoided, not patched).
   In eval mode spconv fuses a conv's bias into its GEMM (``bias_for_infer``), which only
   the CUDA kernels implement; on CPU it fails with "cpu don't support act and bias".
   The subclass (used for the model's one biased conv, the voxel head) sends CPU tensors
   through spconv's training-mode path, which adds the same bias after the GEMM. Same
   parameters and state_dict names; CUDA tensors take spconv's own path.

Also: spconv asks ``torch.fx.is_fx_tracing()`` on every conv, which makes torch 2.13 log
a deprecation warning about that function once per process; it says nothing about this
project, so :func:`apply_spconv_workarounds` filters exactly that message.

All functions are idempotent; the model module applies them at import.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable, Optional

import spconv.pytorch as spconv
import torch

_ORIGINAL_GET_STREAM: Optional[Callable[[], int]] = None
_OMP_RUNTIMES: Optional[list[ctypes.CDLL]] = None


def _cpu_stream() -> int:
    """Stream handle for CPU work: spconv's CPU kernels ignore it; 0 is spconv's own CPU value."""
    return 0


def ensure_cpu_backward() -> bool:
    """Make spconv's sparse-conv backward run on CPU-only PyTorch; returns True if it patched.

    Idempotent. Returns False (and changes nothing) when CUDA is available.
    """
    global _ORIGINAL_GET_STREAM
    if torch.cuda.is_available():
        return False
    import spconv.pytorch.ops as ops

    if ops.get_current_stream is _cpu_stream:
        return True
    _ORIGINAL_GET_STREAM = ops.get_current_stream
    ops.get_current_stream = _cpu_stream
    return True


def is_patched() -> bool:
    """Whether the CPU stream workaround is in place (for diagnostics and tests)."""
    import spconv.pytorch.ops as ops

    return ops.get_current_stream is _cpu_stream


def original_get_current_stream() -> Optional[Callable[[], int]]:
    """spconv's own stream lookup saved by :func:`ensure_cpu_backward` (None if never patched)."""
    return _ORIGINAL_GET_STREAM


def _loaded_omp_runtimes() -> list[ctypes.CDLL]:
    """OpenMP runtimes mapped into this process (GNU, LLVM or Intel), found via /proc/self/maps."""
    global _OMP_RUNTIMES
    if _OMP_RUNTIMES is None:
        paths: list[str] = []
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.split()[-1] if line.strip() else ""
                    name = path.rsplit("/", 1)[-1]
                    if name.startswith(("libgomp", "libiomp", "libomp")) and path not in paths:
                        paths.append(path)
        except OSError:
            paths = []
        runtimes = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
                lib.omp_set_num_threads, lib.omp_get_max_threads  # noqa: B018 (both must exist)
            except (OSError, AttributeError):
                continue
            runtimes.append(lib)
        _OMP_RUNTIMES = runtimes
    return _OMP_RUNTIMES


class _SpconvOpsSafeScatter:
    """Stands in for ``SpconvOps`` inside ``spconv.pytorch.ops``; only scatter_add_cpu differs."""

    def __init__(self, real: Any):
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def scatter_add_cpu(self, out: Any, inp: Any, inds: Any) -> None:
        if torch.get_num_threads() == 1:  # one thread cannot race: no toggling cost
            self._real.scatter_add_cpu(out, inp, inds)
            return
        runtimes = _loaded_omp_runtimes()
        if not runtimes:
            _scatter_add_torch(out, inp, inds)
            return
        saved = [lib.omp_get_max_threads() for lib in runtimes]
        for lib in runtimes:
            lib.omp_set_num_threads(1)
        try:
            self._real.scatter_add_cpu(out, inp, inds)
        finally:
            for lib, n in zip(runtimes, saved):
                lib.omp_set_num_threads(n)


def _scatter_add_torch(out: Any, inp: Any, inds: Any) -> None:
    """out[inds[i]] += inp[i] on tensorview CPU tensors, through torch (race-free)."""
    index = torch.from_numpy(inds.numpy_view()).long()
    target = torch.from_numpy(out.numpy_view())
    target.index_add_(0, index, torch.from_numpy(inp.numpy_view())[: index.shape[0]])


def ensure_thread_safe_cpu_scatter() -> bool:
    """Route spconv's CPU scatter-add through the race-free wrapper; True once installed."""
    import spconv.pytorch.ops as ops

    if isinstance(ops.SpconvOps, _SpconvOpsSafeScatter):
        return True
    ops.SpconvOps = _SpconvOpsSafeScatter(ops.SpconvOps)
    return True


def scatter_is_patched() -> bool:
    import spconv.pytorch.ops as ops

    return isinstance(ops.SpconvOps, _SpconvOpsSafeScatter)


class _DropFxTracingNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true")


_FX_FILTER = _DropFxTracingNotice()


def apply_spconv_workarounds() -> None:
    """Everything above, in one call (the model module calls this at import)."""
    ensure_cpu_backward()
    ensure_thread_safe_cpu_scatter()
    fx_log = logging.getLogger("torch.fx._symbolic_trace")
    if _FX_FILTER not in fx_log.filters:
        fx_log.addFilter(_FX_FILTER)


class BiasedSubMConv3d(spconv.SubMConv3d):
    """SubMConv3d whose bias also works in eval mode on CPU (problem 3 above)."""

    def forward(self, input: spconv.SparseConvTensor, add_input=None):  # noqa: A002 (spconv's name)
        if self.bias is None or input.features.is_cuda or self.training:
            return super().forward(input, add_input)
        # training=True only changes how the bias is applied on the native (CPU) path.
        return self._conv_forward(True, input, self.weight, self.bias, add_input, name=self.name,
                                  sparse_unique_name=self._sparse_unique_name, act_type=self.act_type,
                                  act_alpha=self.act_alpha, act_beta=self.act_beta)
