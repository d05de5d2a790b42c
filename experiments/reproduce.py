"""Reproduce the reference results, then the report, then every figure.

    python experiments/reproduce.py --confirmatory   # make reproduce: the plan's run -> results/paper/
    python experiments/reproduce.py                  # quick presets (seeds 0-4) -> results/exploratory/
    python experiments/reproduce.py --preset smoke --paper /tmp/paper   # a fast rehearsal

``--confirmatory`` is what the committed references are: each experiment the plan answers from,
with its fresh seeds and settings (plans/plan.json); the plan's exploratory-only experiments
(shortcut_variants, a calibration) keep their reference, made once on the exploratory seeds.
Without it, every experiment's quick preset: the exploratory data the plan's power was computed
from, which therefore goes to results/exploratory, never over the confirmatory references.

Each experiment runs in its own process and publishes its reference files to
``<paper>/<experiment>``; one line per experiment says how it went and how long it took, and
the total wall time is printed at the end. Run folders go to results/runs/ as usual, so running
the command again resumes an interrupted reproduction and skips finished nets.
"""
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import EXPERIMENTS, PAPER  # noqa: E402
from analysis.confirmatory import confirmatory_args, exploratory_only  # noqa: E402
from analysis.plan import read_plan  # noqa: E402
from analysis.power import EXPLORATORY  # noqa: E402
from resnet_lab.runs.cli import Parser, run_main  # noqa: E402
from resnet_lab.io.folders import check_writable_dir  # noqa: E402
from resnet_lab.runs.settings import check_not_paper, check_path_text  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(script, *args) -> tuple[int, float]:
    """Run a script quietly; on failure show the end of what it said."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        print("\n".join((done.stdout + done.stderr).splitlines()[-20:]), file=sys.stderr)
    return done.returncode, time.perf_counter() - t0


def main(argv=None):
    parser = Parser(prog="experiments/reproduce.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "smoke"), default="quick",
                        help="quick (the committed references) or smoke (seconds; a rehearsal)")
    parser.add_argument("--paper", type=Path, default=None,
                        help="where the reference files go (default results/paper with "
                             "--confirmatory, else results/exploratory)")
    parser.add_argument("--out", help="root folder of the run folders (default results/runs)")
    parser.add_argument("--confirmatory", action="store_true",
                        help="each experiment with the plan's confirmatory seeds and settings (the "
                             "confirmatory run; the quick presets' seeds are the exploratory ones)")
    args = parser.parse_args(argv)
    if args.paper is None:
        args.paper = PAPER if args.confirmatory else EXPLORATORY
    check_path_text("paper", str(args.paper))
    check_writable_dir(args.paper, "--paper")
    if args.out is not None:
        check_path_text("out", args.out)
        check_not_paper(args.out, None)
        check_writable_dir(args.out)
    start = time.perf_counter()
    extra = ["--out", args.out] if args.out else []
    plan = read_plan() if args.confirmatory else {}
    for i, name in enumerate(EXPERIMENTS, start=1):
        if args.confirmatory and name in exploratory_only(plan):
            print(f"[{i}/{len(EXPERIMENTS)}] {name}: not in the confirmatory run (the plan: "
                  f"{exploratory_only(plan)[name].split(':')[0]}); its reference stays, remade "
                  f"by python experiments/{name}.py --preset quick --publish "
                  f"{args.paper / name}", flush=True)
            continue
        planned = confirmatory_args(name, plan) if args.confirmatory else []
        code, seconds = run(f"{name}.py", "--preset", args.preset, "--publish",
                            str(args.paper / name), *planned, *extra)
        print(f"[{i}/{len(EXPERIMENTS)}] {name}: {'done' if code == 0 else f'FAILED (exit {code})'} "
              f"in {seconds:.0f} s", flush=True)
        if code != 0:
            return code
    for script in ("report.py", "make_figures.py"):
        code, seconds = run(script, "--results", str(args.paper))
        print(f"{script}: {'done' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s",
              flush=True)
        if code != 0:
            return code
    print(f"reproduced {len(EXPERIMENTS)} experiments, the report and the figures in "
          f"{time.perf_counter() - start:.0f} s ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    run_main(main)
