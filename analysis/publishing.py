"""Publishing a run: its reference files, the reduced tables and the figures copied to a folder
(``--publish``, e.g. results/paper/<experiment>)."""
from __future__ import annotations

import shutil
from pathlib import Path

from resnet_lab.runs import RunDir


def publish(module, run_dir, dest) -> Path:
    """Copy a run's reference files (``module.files``; ``module``: the experiment's
    ``Experiment``) to ``dest`` (e.g.
    results/paper/<experiment>), write the tables the figures and claims use
    (``module.published_tables(run_dir)``), and redraw the figures there from that copy."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in module.files:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    out = RunDir(dest)
    for name, df in module.published_tables(run_dir).items():
        out.write_csv(name, df)
    figures = dest / "figures"
    if figures.exists():
        for old in figures.glob("*"):
            old.unlink()
    module.draw_figures(dest)
    return dest
