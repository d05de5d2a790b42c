"""The experiment contract: everything ``analysis.runner.run_experiment`` asks of an experiment,
declared once as an ``Experiment``.

Each experiment module (``analysis/<name>.py``) ends with ``EXPERIMENT = Experiment(...)``
naming its own functions; ``analysis.experiment(name)`` returns that declaration, and a reader
following a script's argv jumps from ``run_experiment``'s ``experiment.parse_settings`` to the
declaration and from there to the function it names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

Settings = dict     # a run's resolved settings (``parse_settings``'s answer)


@dataclass(frozen=True)
class Experiment:
    """One experiment: its presets, its nets, the work each does, and what becomes of their
    tables. The steps that use them, in order, are ``analysis.runner.run_experiment``."""

    name: str
    """The experiment's name: ``analysis/<name>.py``, ``experiments/<name>.py``, its run folders."""
    presets: Mapping[str, dict]
    """``{preset: settings}``: ``quick`` (2 CPU cores), ``smoke`` (the tests), ``paper`` (a GPU)."""
    quick_seconds: float
    """Its quick preset's wall time on 2 CPU cores, in seconds: a CPU run's predicted time scales it."""
    files: Sequence[str]
    """The run folder's files a published reference keeps (``--publish``), besides ``published_tables``."""
    work: Callable[..., Any]
    """``work(cell, cell_run, context, report) -> CellResult``: what one net (a sweep cell) does, in a worker."""
    parse_settings: Callable[[Sequence[str] | None], Settings]
    """``parse_settings(argv) -> settings``: flags -> preset -> checks; nothing is written."""
    cells: Callable[[Settings], list]
    """``cells(settings) -> [Cell]``: the nets of the run, each a sweep cell."""
    context: Callable[[Settings], dict]
    """``context(settings) -> dict``: what every cell's ``work`` shares (sent once per worker)."""
    describe: Callable[[Settings], str]
    """``describe(settings) -> str``: the one line said before the run starts."""
    analyse: Callable[..., None]
    """``analyse(run, tables, cells_table, settings, data)``: write the run's tables, summary, claims."""
    results_text: Callable[[Any], str]
    """``results_text(run_dir) -> str``: what the script prints at the end, from the run folder."""
    draw_figures: Callable[[Any], list]
    """``draw_figures(run_dir) -> [path]``: every figure, from the run folder's tables alone."""
    published_tables: Callable[[Any], dict]
    """``published_tables(run_dir) -> {file: DataFrame}``: the reduced tables a reference keeps."""
    claims: tuple = ()
    """The ids of the claims whose primary test (or mechanism check) it writes (``analysis.report.CLAIMS``)."""
