"""Build results/paper/REPORT.md: every claim of the article next to its committed evidence.

    python experiments/report.py                          # results/paper -> results/paper/REPORT.md
    python experiments/report.py --results DIR --out FILE

Reads DIR/*/claims.csv, DIR/*/config.json and DIR/*/figures/*.png; the logic lives in
analysis/report.py. Same inputs, same bytes out.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import PAPER  # noqa: E402
from analysis.report import build_report  # noqa: E402
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(prog="experiments/report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=PAPER,
                        help="folder holding one sub-folder per experiment (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report file to write (default: RESULTS/REPORT.md)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.results / "REPORT.md"
    print(f"wrote {build_report(args.results, out)}")
    return 0


if __name__ == "__main__":
    run_main(main)
