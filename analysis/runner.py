"""The list of steps every experiment script runs: ``run_experiment(module, argv)``.

The five experiment scripts (``experiments/<name>.py``) are their docstring and a call to this
function with their analysis module; what the steps are, and in which order, lives here once:
settings -> data -> checks before work -> run folder -> this process's share of the nets ->
(once every net is finished) analysis -> figures -> what it printed.

Shards (``--shard i/n`` or a SLURM array task) share one run folder: each trains its share and
the one that finds every net finished writes the analysis (``--analyse`` does it on demand).
A signal stops the run in one line that says what finished and the command that resumes it.
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys

from analysis import finish, merged, open_run, run_path, sweep
from analysis.cells import checked_dataset
from analysis.preflight import (check_memory, check_outputs, check_publish, plan_text,
                                predicted_time)
from resnet_lab.io import signals
from resnet_lab.runs.cellstore import CellStore
from resnet_lab.io.folders import held, now


def run_experiment(module, argv=None) -> int:
    """Run experiment ``module`` (``analysis.<name>``) with the command line ``argv``
    (None: ``sys.argv``); returns the exit status."""
    s = module.parse_settings(argv)                 # flags -> preset -> checks; nothing written
    if s["plan"]:
        print(plan_text(module, s))                 # --plan N: the split over N shards
        return 0
    data = checked_dataset(s)                       # the data exist (else: where to get them)
    check_before_work(module, s, data)              # folders, memory, analysis-only, time
    run = open_run(module, s)                       # its id comes from the settings
    with run.recorded() as record, says_how_to_resume(f"experiments/{module.NAME}.py", argv):
        left = [] if s["analyse"] else sweep(module, s, run)    # this process's nets
        if left:                                    # other shards' nets are not finished yet
            record["status"] = None
            return share_done(s, run, left)
        with analysis_turn(run) as mine:            # one shard writes the analysis
            if not mine:
                record["status"] = None
                print("another shard is writing the analysis")
                return 0
            tables, cells = merged(module, s, run)  # every net, verified
            module.analyse(run, tables, cells, s, data)     # tables, summary, claims
            draw_figures(module, run, record)       # figures, from the CSVs alone
            note_shard(run, s, wrote_analysis=True)
    print(module.results_text(run.path))
    return finish(module, run, s, cells, record)    # how the nets ended; publish


def check_before_work(module, s, data):
    """What can be checked before anything is written (ValueError: one line)."""
    path = run_path(module, s)
    check_outputs(path, "--out" if s.get("out") else "--out (default results/runs)")
    check_publish(s.get("publish"), path)
    if s["analyse"]:
        check_all_finished(module, s, path)
        return
    check_memory(module, s, data)
    line = predicted_time(module, s)
    if line:
        print(line, flush=True)


def check_all_finished(module, s, path):
    """``--analyse`` needs every net finished (by whichever shards)."""
    cells = module.cells(s)
    store = CellStore(path / "cells", module.NAME)
    missing = [c for c in cells if not store.is_done(c)]
    if not (path / "config.json").is_file():
        raise ValueError(f"--analyse: no run at {path}; run the sweep first (the same command "
                         "without --analyse, or its shards)")
    if missing:
        raise ValueError(f"--analyse: {len(missing)} of {len(cells)} nets are not finished "
                         f"(e.g. {missing[0].name}); run the shards that hold them, or the same "
                         "command without --analyse")


def note_shard(run, s, **fields):
    """Add ``fields`` and the end time to this shard's record in config.json (sharded runs)."""
    i, n = s["shard"]
    if n > 1:
        part = run.config.get("shards", {}).get(f"{i}/{n}", {})
        run.record_part("shards", f"{i}/{n}", {**part, "ended": now(), **fields})


def share_done(s, run, left) -> int:
    """A shard whose nets are finished while others' are not: it says so and leaves."""
    i, n = s["shard"]
    note_shard(run, s, left_to_others=len(left))
    nets = "net is" if len(left) == 1 else "nets are"
    print(f"shard {i}/{n}: done; {len(left)} {nets} not finished yet (e.g. {left[0].name}: "
          "another shard's, or running in another process); the last process to finish a net "
          "writes the analysis (or run the same command with --analyse once all are)", flush=True)
    return 0


def analysis_turn(run):
    """Yields True to the one process that holds ``.analysis.lock``: two shards finishing
    at once do not both write the analysis."""
    return held(run.path / ".analysis.lock")


def draw_figures(module, run, record):
    """The figures; one that cannot be drawn is said in one line and recorded in config.json
    (``figures_error``), without failing the nets or the tables already written."""
    try:
        module.draw_figures(run.path)
        if run.config.get("figures_error"):        # an earlier run's: drawn now
            record["fields"] = {"figures_error": None}
    except (OSError, MemoryError):
        raise
    except Exception as err:                        # noqa: BLE001 -- said, recorded, not fatal
        message = f"{type(err).__name__}: {' '.join(str(err).split())}"
        record["fields"] = {"figures_error": message}
        print(f"warning: figures: {message}; the tables are complete (redraw with python "
              f"experiments/make_figures.py {module.NAME} {run.path})", file=sys.stderr,
              flush=True)


@contextlib.contextmanager
def says_how_to_resume(script: str, argv):
    """An interrupted run's one line ends with the command that resumes it (``script`` and
    ``argv``, None: this process's command line)."""
    try:
        yield
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, signals.Interrupted) else signal.SIGINT
        args = sys.argv[1:] if argv is None else list(argv)
        command = shlex.join(["python", script, *args])
        raise signals.Interrupted(signum, f"{err}; resume with: {command}") from None
