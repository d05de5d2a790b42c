"""Compare two run folders table by table, value for value (wall times and memory aside).

    python experiments/compare_runs.py RUN_A RUN_B

Exit status 0 when every table both folders hold is equal, 1 when one differs (each
difference printed), 2 on bad input. Uses: a 1-process and a 2-process run of the same
settings, an interrupted-and-resumed run and an uninterrupted one, two commits' outputs.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402
from resnet_lab.runs.results import compare_runs, load_run  # noqa: E402


def main(argv=None):
    parser = Parser(prog="experiments/compare_runs.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    args = parser.parse_args(argv)
    a, b = load_run(args.run_a), load_run(args.run_b)          # ValueError: not a run folder
    differences = compare_runs(a.path, b.path)
    shared = sorted(set(a.tables) & set(b.tables))
    for line in differences:
        print(line)
    print(f"{len(shared)} shared tables; {len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    run_main(main)
