"""The list of steps every experiment script runs: ``run_experiment(module, argv)``.

The five experiment scripts (``experiments/<name>.py``) are their docstring and a call to this
function with their analysis module; what the steps are, and in which order, lives here once:
settings -> data -> run folder -> the sweep of nets -> analysis -> figures -> what it printed.
"""
from __future__ import annotations

from analysis import finish, open_run, sweep
from analysis.cells import checked_dataset


def run_experiment(module, argv=None) -> int:
    """Run experiment ``module`` (``analysis.<name>``) with the command line ``argv``
    (None: ``sys.argv``); returns the exit status."""
    s = module.parse_settings(argv)                 # flags -> preset -> checks; nothing written
    data = checked_dataset(s)                       # the data exist (else: where to get them)
    run = open_run(module, s)                       # its id comes from the settings
    with run.recorded() as timing:
        tables, cells = sweep(module, s, run)       # every net; finished ones are skipped
        module.analyse(run, tables, cells, s, data)     # tables, summary, claims
        module.draw_figures(run.path)               # figures, from the CSVs alone
    print(module.results_text(run.path))
    return finish(module, run, s, cells, timing)    # how the nets ended; publish
