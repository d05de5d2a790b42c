"""Build results/paper/REPORT.md: every claim of the article next to its committed evidence.

    python experiments/report.py                          # results/paper -> results/paper/REPORT.md
    python experiments/report.py --results DIR --out FILE

Reads DIR/*/claims.csv, DIR/*/config.json and DIR/*/figures/*.png; the logic lives in
resnet_lab.report. Same inputs, same bytes out.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_lab.report import build_report  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "paper"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder holding one sub-folder per experiment (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report file to write (default: RESULTS/REPORT.md)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.results / "REPORT.md"
    try:
        path = build_report(args.results, out)
    except (ValueError, OSError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
