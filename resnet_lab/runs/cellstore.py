"""A sweep's cells on disk: ``<run>/cells/<cell name>/`` holds the net's tables, ``done.json``
and, while the net trains, ``state/`` (the engine's checkpoint) and ``.lock``.

Finished means verified. ``done.json`` is written last, after every table, and records each
table's SHA-256, bytes and rows; a cell is done when done.json exists and every table it lists
still has its checksum. Each run verifies the finished cells it depends on: a cell whose table
changed (cut off, edited, rows dropped) is named with the reason, its done.json removed, and
the net trained again -- never merged into a run's tables. (done.json without checksums,
written before they were recorded, is accepted if every table reads.)

``.lock`` (an advisory ``flock``, held by the process running the cell): two processes -- two
shards on a shared file system -- never run the same cell; the lock goes with the process.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from ..io.folders import atomic_write, held, read_config, write_table

DONE = "done.json"
# The fields of done.json that make the run's cells table (the rest -- checksums, device,
# host, shard -- say where and how, not what).
CELL_COLUMNS = ("cell", "status", "steps_done", "seconds", "peak_memory_bytes")
SUFFIX = ".csv.gz"


class CellChanged(ValueError):
    """Finished cells whose tables no longer match done.json: ``reasons`` {name: why}."""

    def __init__(self, reasons: dict):
        self.reasons = reasons
        name, why = next(iter(reasons.items()))
        more = f" (and {len(reasons) - 1} more cells)" if len(reasons) > 1 else ""
        super().__init__(f"cells/{name}: {why}{more}; run the same command again to train "
                         "the net again")


class CellStore:
    """The cells folder of one run (``root``) for ``experiment``."""

    def __init__(self, root, experiment: str):
        self.root, self.experiment = Path(root), experiment

    def folder(self, cell) -> Path:
        return self.root / cell.name

    def make(self):
        self.root.mkdir(exist_ok=True)

    def is_done(self, cell) -> bool:
        """done.json exists (not verified: see ``problem``)."""
        return (self.folder(cell) / DONE).is_file()

    def record(self, cell) -> dict:
        """The cell's done.json (ValueError naming it if unreadable)."""
        return read_config(self.folder(cell) / DONE)

    # ---- verifying ---------------------------------------------------------------------------
    def problem(self, cell) -> str | None:
        """Why a finished cell cannot be trusted (None: it can, or it is not finished)."""
        if not self.is_done(cell):
            return None
        try:
            record = self.record(cell)
        except ValueError:
            return f"{DONE} is unreadable (cut off or edited)"
        for name, expected in _listed(record, self.folder(cell)).items():
            path = self.folder(cell) / name
            if not path.is_file():
                return f"{name} is missing"
            reason = _mismatch(path.read_bytes(), expected)
            if reason:
                return f"{name} {reason}"
        return None

    def verify(self, cells) -> dict:
        """{cell name: why} for every finished cell of ``cells`` that cannot be trusted."""
        reasons = {}
        for cell in cells:
            why = self.problem(cell)
            if why:
                reasons[cell.name] = why
        return reasons

    def discard(self, name: str):
        """Forget the finished cell ``name``: done.json first (a crash half-way leaves an
        unfinished cell, never a finished one with missing tables), then its tables."""
        folder = self.root / name
        (folder / DONE).unlink(missing_ok=True)
        for path in folder.glob(f"*{SUFFIX}"):
            path.unlink(missing_ok=True)

    # ---- writing and reading -----------------------------------------------------------------
    def save(self, cell, tables: dict, info: dict) -> dict:
        """Write the cell's tables (labelled already), then done.json = ``info`` plus each
        table's checksum; returns done.json's content."""
        checks = {}
        for name, df in tables.items():
            path = write_table(self.folder(cell) / f"{name}{SUFFIX}", df)
            checks[path.name] = _fingerprint(path.read_bytes(), len(df))
        record = {**info, "tables": checks}
        atomic_write(self.folder(cell) / DONE, json.dumps(record, indent=1) + "\n")
        return record

    def read(self, cell) -> tuple[dict, dict]:
        """(done.json, {table stem: DataFrame}) of a finished cell, each table checked against
        its checksum as it is read (CellChanged if one differs)."""
        record = self.record(cell)
        tables = {}
        for name, expected in _listed(record, self.folder(cell)).items():
            path = self.folder(cell) / name
            data = path.read_bytes() if path.is_file() else None
            reason = "is missing" if data is None else _mismatch(data, expected)
            if reason:
                raise CellChanged({cell.name: f"{name} {reason}"})
            tables[name[: -len(SUFFIX)]] = pd.read_csv(io.BytesIO(data), compression="gzip")
        return record, tables

    @contextlib.contextmanager
    def claimed(self, cell):
        """Yields True while this process holds the cell's lock, False if another does."""
        self.folder(cell).mkdir(exist_ok=True)
        with held(self.folder(cell) / ".lock") as mine:
            yield mine

    def resume_point(self, cell) -> int | None:
        """The step an unfinished cell resumes from (its checkpoint's), or None."""
        state = self.folder(cell) / "state"
        if not (state / "checkpoint.pt").is_file():
            return None
        with contextlib.suppress(ValueError, OSError):
            return read_config(state / "config.json").get("steps_done")
        return None


def _listed(record: dict, folder: Path) -> dict:
    """{file name: expected fingerprint or None}: done.json's tables, or (an older done.json
    without checksums) every table in the folder, to be checked by reading it."""
    if "tables" in record:
        return record["tables"]
    return {path.name: None for path in sorted(folder.glob(f"*{SUFFIX}"))}


def _fingerprint(data: bytes, rows: int) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": rows}


def _mismatch(data: bytes, expected: dict | None) -> str | None:
    """Why ``data`` is not the table done.json recorded (None if it is)."""
    if expected is None:                   # no checksum recorded: it must at least read
        try:
            pd.read_csv(io.BytesIO(data), compression="gzip")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
                EOFError, gzip.BadGzipFile) as err:
            return f"is unreadable ({type(err).__name__})"
        return None
    if hashlib.sha256(data).hexdigest() == expected["sha256"]:
        return None
    size = f"{len(data):,} bytes, {expected['bytes']:,} when written"
    return (f"does not match the checksum done.json recorded ({size}: cut off or edited after "
            "the net finished)")
