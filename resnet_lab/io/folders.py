"""Run folders, and the one way to write and read every file of the suite.

A run folder ``results/runs/<experiment>/<run-id>/`` holds ``config.json`` (all arguments, the
resolved settings, git commit, package versions, device, start/end time, status), the run's
CSVs and ``figures/``. Every file is written through ``atomic_write`` (a temporary file in
the same folder, then ``os.replace``), so a run killed at any moment leaves either the old
file or the new one, never half of one; every table is read with ``read_table``.

A live run holds ``.lock`` (an advisory ``flock``): a second process that opens the same
folder gets a clear error instead of treating the live run as crashed. A run's status is
``running``, ``completed``, ``diverged``, ``failed`` or ``interrupted``; a folder whose
status says ``running`` but whose lock is free was killed, and is reopened as such.

Under ``torch.distributed`` only rank 0 writes: the other ranks get a ``RunDir`` with the same
path and ``writer=False``, whose writing methods do nothing.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from .errors import one_line

DEFAULT_ROOT = Path("results") / "runs"
# The committed references: only ``--publish`` writes there.
PAPER_ROOT = Path(__file__).resolve().parents[2] / "results" / "paper"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def now() -> str:
    """The local time, as config.json records it."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ---- writing and reading files ----------------------------------------------------------------

def atomic_write(path, data) -> Path:
    """Write ``data`` (str or bytes) to ``path`` through a temporary file in the same folder
    and ``os.replace``: a kill, a full disk or a refused write never leaves half a file (the
    temporary one goes; an OSError names ``path``). Returns the path."""
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and not isinstance(err, BrokenPipeError):
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise
    return path


def atomic_save(obj, path) -> Path:
    """``torch.save`` through ``atomic_write``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def write_table(path, df: pd.DataFrame) -> Path:
    """A DataFrame as CSV, atomically; gzip (with a fixed header time, so identical tables
    give identical bytes) when the name ends in ``.gz``. Level 6, not Python's default 9:
    on a probe table 2.5x faster for 1% more bytes (measured)."""
    data = df.to_csv(index=False).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write(path, data)


def table_path(folder, stem: str) -> Path | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists (None if neither)."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_table(folder, stem: str, what: str = "a run folder") -> pd.DataFrame:
    """``folder/stem.csv`` or ``.csv.gz``; ValueError saying what was expected if neither."""
    path = table_path(folder, stem)
    if path is None:
        raise ValueError(f"{Path(folder) / (stem + '.csv')} not found: is {folder} {what}?")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: unreadable table ({type(err).__name__}: {err})") from None


def check_writable_dir(path, flag: str = "--out") -> Path:
    """Raise ``ValueError("<flag>: cannot write to ...")`` unless ``path`` is, or can become, a
    writable folder. Creates nothing (a probe file in the nearest existing folder is removed)."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag}: cannot write to {path} ({existing} is not a folder)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{flag}: cannot write to {path} ({err.strerror or err})") from None
    return path


@contextlib.contextmanager
def held(path):
    """Yields True while this process holds the advisory lock (``flock``) on file ``path``,
    False if another process holds it; the lock goes with the block (or the process)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True


# ---- provenance -------------------------------------------------------------------------------

def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# The folders whose contents make a result: a change elsewhere (results/, docs) does not.
CODE_PATHS = ("analysis", "probes", "resnet_lab", "experiments")


def git_dirty() -> bool | None:
    """Whether the checkout has uncommitted changes to tracked code (``CODE_PATHS``; a
    reproduction rewrites results/ as it goes, which is not a code change); None outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                              *(f":/{p}" for p in CODE_PATHS)], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def package_versions() -> dict:
    import numpy
    import scipy
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__, "scipy": scipy.__version__}


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` prints it (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    """The name of the processor ``device`` (a torch.device or its string) computes on: the
    GPU's, for the CUDA device it names (``cuda`` alone: the current one), else the CPU's
    model name."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return cpu_model()


def machine(device=None) -> str:
    """What a run's wall time was measured on: the CPU's model name and the CPUs this process
    may use, and the GPU's name when ``device`` is CUDA (one 2-core run took 151 s on one host
    and 299 s on another: a time means little without it)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    host = f"{cpu_model()}, {cpus} CPUs"
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        return f"{device_name(device)} (host: {host})"
    return host


def settings_id(settings: dict, length: int = 8) -> str:
    """A short hash of settings (as JSON): the same command gets the same run folder."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


def read_config(path) -> dict:
    """A config.json (or done.json) as a dict; a ValueError naming the file if it is not
    JSON (truncated, edited) -- with what to do about it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err}); it was cut off or "
                         f"edited: move it away (a run's finished nets are kept and its "
                         f"record starts afresh) or choose another --out") from None


# ---- run folders ------------------------------------------------------------------------------

class RunDir:
    """One run's folder. ``create`` makes (or reopens) it; ``RunDir(path)`` opens one to read."""

    def __init__(self, path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._lock = None
        self._config_depth = 0
        self.shared = False         # opened beside other shards: config.json needs a lock

    @classmethod
    def create(cls, experiment: str, args: dict, preset: dict | None = None, out=None,
               run_id: str | None = None, lock=False, note: dict | None = None) -> "RunDir":
        """Make ``<out or results/runs>/<experiment>/<run_id>/`` with ``figures/`` and config.json.

        ``run_id`` defaults to the start time plus a hash of ``args``. If the folder exists
        with the same ``args`` it is reopened to be continued (status back to "running"; the
        time, previous status and error, and ``note``, appended to ``restarts``); with other
        arguments it is a ``ValueError``. ``lock``: True holds the folder's lock alone while
        the process lives (ValueError if another process holds it); ``"shared"`` holds it
        beside the other shards of one sweep (each cell has its own lock). Under
        ``torch.distributed`` only rank 0 writes.
        """
        rank, world = rank_and_world()
        args = json.loads(json.dumps(args, default=str))      # as config.json will hold them
        if run_id is None:
            run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + settings_id(args, 6)
            if world > 1:
                box = [run_id]
                torch.distributed.broadcast_object_list(box, src=0)
                run_id = box[0]
        root = Path(out) if out is not None else DEFAULT_ROOT
        run = cls(root / experiment / run_id, writer=rank == 0)
        config_path = run.path / "config.json"
        run.shared = lock == "shared"
        if run.writer:
            run.path.mkdir(parents=True, exist_ok=True)
            if lock:
                run.acquire_lock(shared=run.shared)
        with run.config_lock():
            if config_path.exists():
                return run._reopen(args, shared=lock == "shared", note=note)
            if run.writer:
                (run.path / "figures").mkdir(exist_ok=True)
                atomic_write(config_path, _json({
                    "experiment": experiment, "run_id": run_id, "args": args, "preset": preset,
                    "git_commit": git_commit(), "versions": package_versions(),
                    "device": args.get("device"), "machine": machine(args.get("device")),
                    "start_time": now(), "end_time": None,
                    "status": "running"}))
        return run

    def _reopen(self, args, shared=False, note=None):
        try:
            old = self.config
        except ValueError:
            self.release_lock()
            raise
        if old.get("args") != args:
            self.release_lock()
            raise ValueError(f"run folder {self.path} exists with other arguments; "
                             "choose another --out")
        previous = old.get("status")
        if previous == "running" and not shared:     # nobody holds the lock (we do): killed
            previous = "interrupted (killed)"
        restart = {"time": now(), "previous_status": previous,
                   "previous_error": old.get("error"), "git_commit": git_commit(), **(note or {})}
        self.update_config(status="running", end_time=None, error=None,
                           restarts=old.get("restarts", []) + [restart])
        return self

    def acquire_lock(self, shared: bool = False):
        """Take the folder's advisory lock for this process (released at exit): alone, or
        ``shared`` with the other shards of the same sweep."""
        handle = open(self.path / ".lock", "a")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ValueError(f"run folder {self.path} is in use by another running process"
                             f"{' (not a --shard of this sweep)' if shared else ''}; wait for it "
                             "to finish or choose another --out") from None
        self._lock = handle

    def status(self) -> str:
        """The run's status as config.json says it -- except that a run which says
        ``running`` while nobody holds its lock was killed: ``interrupted``."""
        status = self.config.get("status")
        if status != "running" or self._lock is not None:
            return status
        with open(self.path / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return "running"          # another process holds it: alive
            fcntl.flock(handle, fcntl.LOCK_UN)
        return "interrupted"

    def release_lock(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @contextlib.contextmanager
    def config_lock(self):
        """Hold ``.config.lock`` while config.json is read, changed and written, if the shards
        of one sweep share the folder (re-entrant within this object)."""
        if not (self.writer and self.shared) or self._config_depth:
            self._config_depth += 1
            try:
                yield
            finally:
                self._config_depth -= 1
            return
        with open(self.path / ".config.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._config_depth += 1
            try:
                yield
            finally:
                self._config_depth -= 1

    @classmethod
    def at(cls, path, **config) -> "RunDir":
        """A folder that need not be an experiment's run (e.g. a sweep cell's engine state),
        made with a config.json holding ``config`` if it has none."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        try:
            run.config
        except (OSError, ValueError):        # missing, or cut off: its record starts afresh
            atomic_write(run.path / "config.json", _json({**config, "status": "running"}))
        return run

    @property
    def config(self) -> dict:
        return read_config(self.path / "config.json")

    def update_config(self, **fields):
        """Merge ``fields`` into config.json (atomically)."""
        if self.writer:
            with self.config_lock():
                config = self.config
                config.update(fields)
                atomic_write(self.path / "config.json", _json(config))

    def record_part(self, key: str, part: str, value):
        """``config[key][part] = value``: e.g. one shard's record beside the others'."""
        if self.writer:
            with self.config_lock():
                self.update_config(**{key: {**self.config.get(key, {}), part: value}})

    def finish(self, status: str = "completed", **fields):
        """Record the end time and final status (completed, diverged, interrupted, failed)."""
        self.update_config(status=status, end_time=now(), **fields)

    @contextlib.contextmanager
    def recorded(self):
        """The body's outcome goes into config.json: ``interrupted`` (a signal, a closed
        stdout) or ``failed``, with the error in one line, and the error re-raised; else
        ``record["status"]`` (default ``completed``) with the wall time, left in the yielded
        dict as ``seconds``. A body that sets ``record["status"] = None`` leaves the status
        as it is (a shard done with its share while others still run). The folder's lock is
        released at the end."""
        record = {"status": "completed"}
        t0 = time.perf_counter()
        try:
            yield record
        except BaseException as err:
            stopped = isinstance(err, (KeyboardInterrupt, BrokenPipeError))
            message = " ".join(str(err).split()) if stopped else one_line(err)
            with contextlib.suppress(OSError, ValueError):     # a full disk: still say why
                self.finish("interrupted" if stopped else "failed",
                            error=message or f"{type(err).__name__}: {err}")
            self.release_lock()
            raise
        record["seconds"] = time.perf_counter() - t0
        if record["status"] is not None:
            self.finish(record["status"], wall_seconds=round(record["seconds"], 1),
                        **record.get("fields", {}))
        self.release_lock()

    def write_csv(self, name: str, df):
        """``write_table`` into this folder (rank 0 only)."""
        if self.writer:
            write_table(self.path / name, df)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, (0, 1) otherwise."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1

