"""Triton's kernels on the CPU, for the tests: Triton's interpreter (``TRITON_INTERPRET=1``) runs
a kernel on CPU tensors with numpy. The variable must be set before triton is imported
(``tl.sum``, ``tl.zeros`` are themselves kernels, made interpreted or compiled at import), so a
test file runs its Triton cases again in a child process that has it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = Path(__file__).resolve().parents[1]


def run_in_child(test_file, keyword):
    """Run the tests of ``test_file`` that ``keyword`` selects (pytest -k) in a child process
    under the interpreter: fail with its output if one fails, skip saying why if all skipped."""
    if INTERPRETING:
        pytest.skip("this is the child process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                            str(Path(test_file).relative_to(ROOT)), "-k", keyword],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else child.stderr[-2000:]
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-2000:]
    if " passed" not in summary:                     # everything skipped: say why
        pytest.skip(f"under the interpreter: {child.stdout[-1500:]}")


def interpreted_kernels():
    """probes.kernels.triton_sums with interpreted kernels taking CPU tensors; skips outside the
    child process and where the interpreter does not run a kernel here."""
    if not INTERPRETING:
        pytest.skip("runs in a child process under TRITON_INTERPRET=1")
    reason = _interpreter_fails()
    if reason:
        pytest.skip(reason)
    from probes.kernels import triton_sums
    triton_sums.DEVICES = ("cuda", "cpu")
    return triton_sums


def _interpreter_fails():
    """None, or why Triton's interpreter cannot run a kernel here."""
    import triton
    import triton.language as tl

    @triton.jit
    def double(x_ptr, n, B: tl.constexpr):
        i = tl.arange(0, B)
        tl.store(x_ptr + i, 2 * tl.load(x_ptr + i, mask=i < n), mask=i < n)

    try:
        x = torch.ones(3)
        double[(1,)](x, 3, B=4)
        return None if x.tolist() == [2.0, 2.0, 2.0] else f"interpreter returned {x.tolist()}"
    except Exception as err:                       # any failure: report it as the skip reason
        return f"Triton's interpreter fails with torch {torch.__version__}: {type(err).__name__}: {err}"
