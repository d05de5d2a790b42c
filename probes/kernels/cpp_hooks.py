"""The probe's taps and gradient hooks in C++ (``_cpp_hooks.cpp``): built once, loaded, or None.

A probed ResNet-1001 step passes ~1,665 taps and hooks ~1,000 gradients. Through Python a tap
costs ~5 us of interpreter time and a gradient hook ~12 us; in C++ they run without it on CPU
tensors, reading by the C module's kernel, and call Python only for what they have not seen
(see ``_cpp_hooks.cpp``).

They are a libtorch extension, compiled by ``torch.utils.cpp_extension`` against the torch
that is installed (needs a C++ compiler and ninja; ~25 s on 2 cores, once per version of the
source) into the checkout's ``build/cpp_hooks/torch-<version>`` (each checkout and torch build
its own; torch's extensions directory where that is read-only, e.g. an installed package).
``make install`` builds them; otherwise the first probe that meets a CPU tensor does, saying so
on stderr.
Where the build fails the probe uses its Python taps and hooks -- the same numbers, slower --
and says why once. ``RESNET_LAB_PYTHON_HOOKS=1`` skips them (and their build) altogether.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("_cpp_hooks.cpp")
NAME = "resnet_lab_probe_hooks"

_module = None
_tried = False


def load():
    """The compiled module (building it if needed), or None where it cannot be built or is
    switched off; tried once per process."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("RESNET_LAB_PYTHON_HOOKS") == "1":
        return None
    try:
        from torch.utils import cpp_extension
        where = _build_directory() or cpp_extension._get_build_directory(NAME, verbose=False)
        if not any(Path(where).glob(f"{NAME}*.so")):
            print("probes: compiling the C++ taps and gradient hooks (once, ~25 s on 2 cores)...",
                  file=sys.stderr, flush=True)
        _module = cpp_extension.load(NAME, [str(SOURCE)], extra_cflags=["-O2"], build_directory=where,
                                     verbose=False)
    except Exception as e:        # no compiler, no ninja, headers missing: the Python hooks
        warnings.warn(f"probes: C++ taps and gradient hooks unavailable ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}); "
                      "using Python's (same statistics, slower)", RuntimeWarning, stacklevel=2)
        _module = None
    return _module


def _build_directory():
    """``build/cpp_hooks/torch-<version>`` of the checkout this module is in, or None where it
    is not writable. One per checkout and torch build: two checkouts sharing torch's directory,
    or two environments of one checkout (``make test-ecosystem``'s torch is not ``make
    install``'s), would rebuild at every switch, and a process could load the other's build."""
    import torch
    where = SOURCE.parents[2] / "build" / "cpp_hooks" / f"torch-{torch.__version__}"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(where) if os.access(where, os.W_OK) else None


if __name__ == "__main__":       # make install: build now rather than inside a first probe
    module = load()
    print(f"probes: C++ taps and gradient hooks {'ready' if module else 'not available: the Python ones'}")
