"""Builds the optional C module probes._fastsums (one-pass CPU reductions for SignalProbe).

Everything else is in pyproject.toml. ``optional=True``: without a C compiler the install
still succeeds and the probe uses torch operations instead (slower on CPU, same values).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("probes._fastsums", ["probes/_fastsums.c"],
                             extra_compile_args=["-O3", "-fopenmp-simd", "-funroll-loops", "-fvariable-expansion-in-unroller"], optional=True)])
