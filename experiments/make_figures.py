"""Redraw figures from the CSVs of run folders alone -- no model code runs.

    python experiments/make_figures.py grad_flow results/runs/grad_flow/<run-id>
    python experiments/make_figures.py all              # every folder under results/paper/

Each experiment's figures live in ``probes.<experiment>.draw_figures(run_dir)``.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_lab.cli import run_main  # noqa: E402

PAPER = Path("results/paper")


def figure_module(experiment: str):
    try:
        module = importlib.import_module(f"probes.{experiment}")
    except ModuleNotFoundError:
        module = None
    if module is None or not hasattr(module, "draw_figures"):
        known = sorted(p.stem for p in Path(__file__).resolve().parents[1].joinpath("probes").glob("*.py")
                       if "def draw_figures" in p.read_text())
        raise ValueError(f"no figures for experiment {experiment!r}; valid: all, {', '.join(known)}")
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment name (grad_flow, ...) or 'all'")
    parser.add_argument("run_dir", nargs="?", help="run folder (default results/paper/<experiment>)")
    args = parser.parse_args()
    if args.experiment == "all":
        if args.run_dir:
            raise ValueError("'all' redraws every folder of results/paper; give no RUN_DIR")
        jobs = [(p.name, p) for p in sorted(PAPER.iterdir()) if p.is_dir()
                and (Path(__file__).resolve().parents[1] / "probes" / f"{p.name}.py").exists()]
    else:
        jobs = [(args.experiment, Path(args.run_dir) if args.run_dir else PAPER / args.experiment)]
    for experiment, run_dir in jobs:
        module = figure_module(experiment)
        if not run_dir.is_dir():
            raise ValueError(f"run folder {run_dir} does not exist")
        for path in module.draw_figures(run_dir):
            print(path)


if __name__ == "__main__":
    run_main(main)
