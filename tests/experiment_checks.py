"""Checks the tests of the experiment scripts share (imported by their test modules)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_lab.runs.cli import main_guard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets: one thread is faster, and on a busy 2-core machine two threads spin against
    other processes (tens of times slower). Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_script(name):
    path = ROOT / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(name, argv, capsys):
    """A script's ``main`` in this process, as its command line would run it: returns
    (exit status, stderr). Seconds faster per call than a fresh interpreter."""
    threads = torch.get_num_threads()
    try:
        code = main_guard(load_script(name).main)(argv)
    except SystemExit as exit_:            # argparse's own errors
        code = exit_.code
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().err


def run_smoke(name, out, *extra):
    """Run a script's smoke preset in this process; returns its run folder. (The scripts set
    torch's thread count, --threads; it is put back afterwards.)"""
    threads = torch.get_num_threads()
    try:
        code = main_guard(load_script(name).main)(["--preset", "smoke", "--out", str(out), *extra])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    (run,) = (Path(out) / name).iterdir()
    return run


def redraw_without_model_code(experiment, folder):
    """make_figures.py on ``folder`` in a fresh interpreter where building a network or
    calling any module raises: the figures must come from the CSVs alone."""
    for png in (Path(folder) / "figures").glob("*.png"):
        png.unlink()
    code = ("import resnet_lab.networks.families as n, torch, runpy, sys\n"
            "def boom(*a, **k): raise RuntimeError('model code ran')\n"
            "n.ResNet.__init__ = boom\n"
            "torch.nn.Module.__call__ = boom\n"
            f"sys.argv = ['make_figures.py', {experiment!r}, {str(folder)!r}]\n"
            f"runpy.run_path({str(ROOT / 'experiments' / 'make_figures.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return sorted(p.stem for p in (Path(folder) / "figures").glob("*.png"))


def bad_input(name, argv, needle, tmp_path, capsys, monkeypatch):
    """The script answers ``argv`` with one line naming ``needle``, exit 2, and writes nothing."""
    monkeypatch.chdir(tmp_path)
    out = [] if "--out" in argv else ["--out", str(tmp_path / "runs")]
    threads = torch.get_num_threads()
    try:
        assert main_guard(load_script(name).main)(["--preset", "smoke", *argv, *out]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def help_text(name, capsys):
    with pytest.raises(SystemExit):
        load_script(name).main(["--help"])
    return capsys.readouterr().out
