"""What went wrong, in one line that says what to do: the text a script prints for an error
it expects (``resnet_lab.runs.cli.main_guard``; exit status 2).

Expected are bad input (``ValueError``, naming the valid choices), missing data
(``FileNotFoundError`` saying where to get it), the operating system saying no (``OSError``:
no space, permission, read-only, name too long, a link loop ...) and memory running out; a
net that fails in a sweep is named (``CellFailed``). Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import errno

# What to do about an OSError, by its errno.
_ADVICE = {
    errno.ENOSPC: "free some space (or give --out on another disk), then run the same command "
                  "again: finished nets are kept",
    errno.EDQUOT: "the disk quota is used up: free some space (or give --out elsewhere), then "
                  "run the same command again: finished nets are kept",
    errno.EACCES: "give this user permission there, or choose another folder (--out, --data-dir)",
    errno.EPERM: "give this user permission there, or choose another folder (--out, --data-dir)",
    errno.EROFS: "the file system is read-only: choose another folder (--out)",
    errno.ENAMETOOLONG: "the path is longer than the file system allows: choose a shorter --out",
    errno.ELOOP: "a symbolic link on the path points back to itself: fix the link or choose "
                 "another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another folder",
    errno.EIO: "the disk (or network file system) failed to read or write: check it, then run "
               "the same command again",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer --workers",
}
MEMORY_ADVICE = ("use a smaller --width or --batch-size, fewer --workers, or a machine (or "
                 "GPU) with more memory")


class CellFailed(Exception):
    """A net of a sweep failed: ``where`` names it, ``message`` says what happened."""

    def __init__(self, where: str, message: str):
        self.where, self.message = where, message
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        return type(self), (self.where, self.message)


def is_out_of_memory(err: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError or the CPU allocator's RuntimeError."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower()
                                              or "can't allocate memory" in text)


def one_line(err: BaseException) -> str | None:
    """The one line an expected error prints (without ``error: ``); None for a bug."""
    if isinstance(err, CellFailed):
        return str(err)
    if is_out_of_memory(err):
        return f"out of memory ({_first_line(err)}): {MEMORY_ADVICE}"
    if isinstance(err, OSError) and err.errno is not None and not isinstance(err, BrokenPipeError):
        return os_error(err)
    if isinstance(err, (ValueError, FileNotFoundError)):
        return " ".join(str(err).split()) or type(err).__name__
    return None


def os_error(err: OSError) -> str:
    """``<what the OS said>: <path>: <what to do>``."""
    where = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    parts = [err.strerror or type(err).__name__, str(where) if where != "" else None,
             _ADVICE.get(err.errno)]
    return ": ".join(p for p in parts if p)


def _first_line(err) -> str:
    text = " ".join(str(err).split("\n")[0].split()) or type(err).__name__
    return text[:160]
