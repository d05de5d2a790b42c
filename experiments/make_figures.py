"""Redraw figures from the CSVs of run folders alone -- no model code runs.

    python experiments/make_figures.py                       # every experiment in results/paper/
    python experiments/make_figures.py --results DIR         # every experiment in DIR/
    python experiments/make_figures.py grad_flow             # results/paper/grad_flow
    python experiments/make_figures.py grad_flow results/runs/grad_flow/<run-id>

Each experiment's figures are drawn by ``analysis.<experiment>.draw_figures(run_dir)``;
``analysis.EXPERIMENTS`` lists the experiments.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import EXPERIMENTS, PAPER, experiment  # noqa: E402
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402


def jobs(name, run_dir, results=PAPER):
    """(experiment name, folder) pairs to redraw."""
    if name is None:
        return [(n, results / n) for n in EXPERIMENTS if (results / n).is_dir()]
    experiment(name)                                     # ValueError naming the valid ones
    folder = Path(run_dir) if run_dir else results / name
    if not folder.is_dir():
        what = "is a file, not a run folder" if folder.exists() else "does not exist"
        raise ValueError(f"RUN_DIR {folder} {what}")
    return [(name, folder)]


def main(argv=None):
    parser = Parser(prog="experiments/make_figures.py", description=__doc__,
                    formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", help=f"one of {', '.join(EXPERIMENTS)} "
                                                      "(default: all of results/paper)")
    parser.add_argument("run_dir", nargs="?", help="run folder (default RESULTS/<experiment>)")
    parser.add_argument("--results", type=Path, default=PAPER,
                        help="folder of the experiments' reference folders (default results/paper)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        raise ValueError(f"--results {args.results}: not a folder")
    for name, folder in jobs(args.experiment, args.run_dir, args.results):
        written = experiment(name).draw_figures(folder)
        print(f"{name}: {len(written)} files in {folder / 'figures'}")
    return 0


if __name__ == "__main__":
    run_main(main)
