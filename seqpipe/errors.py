"""The errors seqpipe raises on bad user input. The CLI prints their message and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path

#: operating-system errors of the user's environment (permissions, a full or read-only disk), shown as one line
ENVIRONMENT_ERRNOS = (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR)


class SeqpipeError(Exception):
    """Base class: a problem the user can fix; shown without a traceback."""


class DataError(SeqpipeError, ValueError):
    """A data file is missing, empty or malformed.

    The message names the file and, when known, the record and line, then what is wrong.
    """

    def __init__(self, path: str | Path, problem: str, *, record: str | int | None = None, line: int | None = None):
        super().__init__(f"{location(path, record, line)}: {problem}")
        self.path, self.problem, self.record, self.line = str(path), problem, record, line


def location(path: str | Path | None, record: str | int | None = None, line: int | None = None) -> str:
    """Where a problem is, as messages say it: ``path, record 'id', line 7``; a record number reads ``record #3``;
    the parts not known are left out."""
    parts = [] if path is None else [str(path)]
    if record is not None:
        parts.append(f"record {record!r}" if isinstance(record, str) else f"record #{record}")
    if line is not None:
        parts.append(f"line {line}")
    return ", ".join(parts)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): a library's long text as one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def first_few(items: list[str], shown: int, separator: str = ", ", unit: str = "") -> str:
    """The first ``shown`` of ``items`` joined by ``separator``, and how many more there are: ``a, b and 3 more``
    (``unit``: what they are, after the count: ``and 3 more rows``)."""
    rest = len(items) - shown
    return separator.join(items[:shown]) + (f" and {rest} more{' ' + unit if unit else ''}" if rest > 0 else "")


def environment_error(error: BaseException) -> SeqpipeError | None:
    """``error`` as one line naming the file, when it is an :data:`ENVIRONMENT_ERRNOS` OSError (``x: Permission
    denied``); else None."""
    if not isinstance(error, OSError) or error.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    return SeqpipeError(f"{where or 'a file'}: {error.strerror or error}")


class ConfigError(SeqpipeError, ValueError):
    """Arguments that do not fit together (for example data that does not match a checkpoint)."""


class CheckpointError(SeqpipeError, ValueError):
    """A checkpoint that is missing, unreadable, untrusted or trained for another task; the message names the file."""


class TrainingDiverged(SeqpipeError, ArithmeticError):
    """The training loss became NaN or infinite; the run stops before a checkpoint of it is written."""
