"""The list of steps every experiment script runs: ``run_experiment(module, argv)``.

The experiment scripts (``experiments/<name>.py``) are their docstring and a call to this
function with their experiment's declaration (``analysis.contract.Experiment``, the
``EXPERIMENT`` at the end of ``analysis/<name>.py``); what the steps are, and in which order,
lives here once:
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

from analysis.cells import checked_dataset
from analysis.contract import Experiment
from analysis.preflight import (check_memory, check_outputs, check_publish, plan_text,
                                predicted_time)
from analysis.plan import record_plan
from analysis.publishing import publish
from analysis.run_folder import open_run, run_path
from resnet_lab.io import signals
from resnet_lab.io.folders import RunDir, held, now
from resnet_lab.runs.cellstore import CellChanged, CellStore
from resnet_lab.runs.shards import share
from resnet_lab.runs.sweep import merge_cells, outcome, retrain, run_cells


def run_experiment(experiment: Experiment, argv=None) -> int:
    """Run ``experiment`` (``analysis.<name>.EXPERIMENT``) with the command line ``argv``
    (None: ``sys.argv``); returns the exit status."""
    s = experiment.parse_settings(argv)         # flags -> preset -> checks; nothing written
    if s["plan"]:
        print(plan_text(experiment, s))         # --plan N: the split over N shards
        return 0
    data = checked_dataset(s)                   # the data exist (else: where to get them)
    check_before_work(experiment, s, data)      # folders, memory, analysis-only, time
    run = open_run(experiment, s)               # its id comes from the settings
    record_plan(run)                            # the plan it runs under (the report checks it)
    with run.recorded() as record, says_how_to_resume(f"experiments/{experiment.name}.py", argv):
        left = [] if s["analyse"] else sweep(experiment, s, run)    # this process's nets
        if left:                                # other shards' nets are not finished yet
            record["status"] = None
            return share_done(s, run, left)
        with analysis_turn(run) as mine:        # one shard writes the analysis
            if not mine:
                record["status"] = None
                print("another shard is writing the analysis")
                return 0
            tables, cells = merged(experiment, s, run)          # every net, verified
            experiment.analyse(run, tables, cells, s, data)     # tables, summary, claims
            draw_figures(experiment, run, record)               # figures, from the CSVs alone
            note_shard(run, s, wrote_analysis=True)
    print(experiment.results_text(run.path))
    return finish(experiment, run, s, cells, record)            # how the nets ended; publish


def check_before_work(experiment, s, data):
    """What can be checked before anything is written (ValueError: one line)."""
    path = run_path(experiment, s)
    check_outputs(path, "--out" if s.get("out") else "--out (default results/runs)")
    check_publish(s.get("publish"), path, experiment.name, s["preset"], s.get("publish_over"))
    if s["analyse"]:
        check_all_finished(experiment, s, path)
        return
    check_memory(experiment, s, data)
    line = predicted_time(experiment, s)
    if line:
        print(line, flush=True)


def check_all_finished(experiment, s, path):
    """``--analyse`` needs every net finished (by whichever shards)."""
    cells = experiment.cells(s)
    store = CellStore(path / "cells", experiment.name)
    missing = [c for c in cells if not store.is_done(c)]
    if not (path / "config.json").is_file():
        raise ValueError(f"--analyse: no run at {path}; run the sweep first (the same command "
                         "without --analyse, or its shards)")
    if missing:
        raise ValueError(f"--analyse: {len(missing)} of {len(cells)} nets are not finished "
                         f"(e.g. {missing[0].name}); run the shards that hold them, or the same "
                         "command without --analyse")


def sweep(experiment, s: dict, run: RunDir) -> list:
    """This process's share of the experiment's cells (``experiment.cells``, done by
    ``experiment.work``; every cell unless sharded) in ``s["workers"]`` processes; finished
    cells are verified and skipped. Returns the cells still unfinished (other shards')."""
    cells = experiment.cells(s)
    return run_cells(run, experiment.name, cells, experiment.work, experiment.context(s),
                     share=share(cells, s["shard"]), workers=s["workers"], threads=s["threads"],
                     steps=s.get("steps", 1), devices=s.get("devices"))


def merged(experiment, s: dict, run: RunDir):
    """(tables, cells table) of every cell, each verified as it is read; a cell whose tables
    changed since it finished is named and trained again first."""
    cells = experiment.cells(s)
    try:
        return merge_cells(run.path / "cells", experiment.name, cells)
    except CellChanged as err:
        retrain(CellStore(run.path / "cells", experiment.name), err.reasons)
        run_cells(run, experiment.name, cells, experiment.work, experiment.context(s),
                  share=[c for c in cells if c.name in err.reasons], workers=s["workers"],
                  threads=s["threads"], steps=s.get("steps", 1), devices=s.get("devices"))
        return merge_cells(run.path / "cells", experiment.name, cells)


def finish(experiment, run: RunDir, s: dict, cells, timing) -> int:
    """The run's last words: how its nets ended, the published copy, where it wrote."""
    print(outcome(cells))
    if s.get("publish") is not None:
        print(f"published to {publish(experiment, run.path, s['publish'], s.get('publish_over'))}")
    print(f"done in {timing['seconds']:.0f} s; wrote {run.path}")
    return 0


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


def draw_figures(experiment, run, record):
    """The figures; one that cannot be drawn is said in one line and recorded in config.json
    (``figures_error``), without failing the nets or the tables already written."""
    try:
        experiment.draw_figures(run.path)
        if run.config.get("figures_error"):        # an earlier run's: drawn now
            record["fields"] = {"figures_error": None}
    except (OSError, MemoryError):
        raise
    except Exception as err:                        # noqa: BLE001 -- said, recorded, not fatal
        message = f"{type(err).__name__}: {' '.join(str(err).split())}"
        record["fields"] = {"figures_error": message}
        print(f"warning: figures: {message}; the tables are complete (redraw with python "
              f"experiments/make_figures.py {experiment.name} {run.path})", file=sys.stderr,
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
