"""probes.kernels: the backends that compute the probe's raw sums (``probes.stats``), one per
device type, behind one interface (``torch_ops.TorchBackend``).

* ``torch_ops``: torch operations, on any device -- the reference, and every backend's
  fallback for a tensor it does not read;
* ``c_module`` (``_fastsums.c``): the CPU's, one read of an fp32 tensor for all its sums;
  with ``cpp_hooks`` (``_cpp_hooks.cpp``), the C++ taps and gradient hooks that read by it;
* ``triton_sums``: CUDA's, one Triton launch per tensor (fp32, bf16, fp16).

A compiled backend takes its row's layout from ``probes.stats.RAW_ROW`` and, loaded, must give
the torch path's values on a fixed tensor (``loading``), or it is refused.
``for_device(device)`` is the one place a backend is chosen; a probe asks once per device
(when it lays its buffers out there). What each backend earned, measured, is in
docs/PERFORMANCE.md.
"""
from __future__ import annotations

import contextlib

import torch

from . import c_module
from .c_module import CModuleBackend
from .loading import BackendMismatch, check_values
from .torch_ops import TorchBackend

TORCH = TorchBackend()
C_MODULE = CModuleBackend() if c_module._fastsums is not None else None
TRITON = None
if torch.cuda.is_available():    # only a GPU runs them: no triton import (0.2 s) elsewhere
    try:
        from . import triton_sums
    except ImportError:          # no triton: CUDA tensors by the torch path
        pass
    else:
        TRITON = triton_sums.TritonBackend()      # its row's layout: checked at its import
        check_values(TRITON, "cuda", "probes/kernels/triton_sums.py")

# Each device type's backend; any other device's is the torch path.
CHOSEN = {"cpu": C_MODULE or TORCH, "cuda": TRITON or TORCH}
_forced = None

__all__ = ["CHOSEN", "BackendMismatch", "TorchBackend", "available", "for_device", "forced", "scratch_bytes"]


def for_device(device: torch.device) -> TorchBackend:
    """The backend that reads tensors on ``device``."""
    return _forced or CHOSEN.get(device.type, TORCH)


def available() -> dict:
    """Name -> backend, for each backend this process can run (Triton: on CUDA)."""
    return {k.name: k for k in (TORCH, C_MODULE, TRITON) if k is not None}


def scratch_bytes() -> int:
    """Bytes the backends in use keep between calls (the Triton kernels' partial sums)."""
    backends = set(available().values()) | ({_forced} if _forced is not None else set())
    return sum(k.scratch_bytes() for k in backends)


@contextlib.contextmanager
def forced(backend):
    """While in, every device's tensors are read by ``backend`` (a name of ``available()`` or
    a ``TorchBackend``): the tests compare backends on the same tensors this way. A probe
    keeps the backend it chose when it laid its buffers out: make it inside."""
    global _forced
    if isinstance(backend, str):
        backends = available()
        if backend not in backends:
            raise ValueError(f"backend {backend!r} is not available here; valid: {', '.join(backends)}")
        backend = backends[backend]
    saved, _forced = _forced, backend
    try:
        yield backend
    finally:
        _forced = saved
