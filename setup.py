"""Builds the optional C module probes.kernels._fastsums (one-pass CPU reductions for SignalProbe).

Everything else is in pyproject.toml. ``optional=True``: without a C compiler the install
still succeeds and the probe uses torch operations instead (slower on CPU, same values).
OpenMP: the module runs on the libgomp that PyTorch's CPU build loads (same soname).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "probes.kernels._fastsums", ["probes/kernels/_fastsums.c"],
    extra_compile_args=["-O3", "-fopenmp", "-funroll-loops", "-fvariable-expansion-in-unroller"],
    extra_link_args=["-fopenmp"], optional=True)])
