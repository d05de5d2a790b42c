"""Publishing a run: its reference files, the reduced tables and the figures written to a
folder (``--publish``, e.g. results/paper/<experiment>), swapped in only when complete."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from analysis.preflight import publish_problem, refusal
from resnet_lab.io.folders import RunDir, atomic_write, read_config, record_table


def publish(module, run_dir, dest, over=False) -> Path:
    """Copy a run's reference files (``module.files``; ``module``: the experiment's ``Experiment``) to ``dest`` (e.g.
    results/paper/<experiment>), write the tables the figures and claims use
    (``module.published_tables(run_dir)``), and redraw the figures there from that copy.

    Atomic: everything is written into a new folder beside ``dest`` (under ``.publishing/``,
    where no reader looks), and swapped in only when complete; a failure (a full disk, a
    figure that cannot be drawn) leaves the old references as they were. Refused
    (``preflight.publish_problem``) over another experiment's or another preset's references
    unless ``over``. Every table is listed with its checksum in the copy's tables.json."""
    run_dir, dest = Path(run_dir), Path(dest)
    args = read_config(run_dir / "config.json").get("args") or {}
    why = publish_problem(dest, module.name, args.get("preset") if isinstance(args, dict) else None)
    if why and not over:                       # checked before work too; another may have since
        raise ValueError(refusal(dest, why))
    staging = dest.parent / ".publishing"
    staging.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=staging, prefix=f"{dest.name}.new-"))
    try:
        os.chmod(new, 0o777 & ~_umask())
        names = ["config.json", *(n for n in module.files if n != "config.json")]
        for name in names:                     # config.json first: it makes the folder a record
            if (run_dir / name).is_file():
                data = (run_dir / name).read_bytes()
                atomic_write(new / name, data)
                if name.endswith((".csv", ".csv.gz")):
                    record_table(new / name, data)
        out = RunDir(new)
        for name, df in module.published_tables(run_dir).items():
            out.write_csv(name, df)
        (new / "figures").mkdir()
        module.draw_figures(new)
        if dest.is_dir():                      # a note kept beside the references stays; an old
            for old in dest.iterdir():         # table or figure does not mix with the new ones
                if old.is_file() and not old.name.endswith((".csv", ".csv.gz", ".json")) \
                        and not (new / old.name).exists():
                    shutil.copy2(old, new / old.name)
        _swap(new, dest, staging)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            staging.rmdir()                    # empty unless another publish is under way
    return dest


def _swap(new: Path, dest: Path, staging: Path):
    """Put the complete folder ``new`` at ``dest``: two renames in one file system (the old
    folder, moved aside, comes back if the second fails), then the old one is removed."""
    if not dest.exists():
        os.rename(new, dest)
        return
    aside = Path(tempfile.mkdtemp(dir=staging, prefix=f"{dest.name}.old-"))
    os.rename(dest, aside / dest.name)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(aside / dest.name, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
