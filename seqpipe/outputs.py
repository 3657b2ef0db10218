"""Writing an output so that nothing half-written is left behind and nothing of the user's is replaced.

Every seqpipe writer (prediction CSVs, genome zarr stores and bedGraphs, forecast plots, GFF tracks) goes
through :class:`Output`: it writes under ``<path>.partial`` and renames that to ``path`` when it is
complete. An existing ``path`` is replaced only when seqpipe wrote it, as an output of the same kind (or, for a
folder output, when it is an empty folder); a user's file or folder there stops the run with one line, before
any work is done.

How seqpipe recognises its outputs: a folder output holds a marker file ``.seqpipe-output`` naming its
kind, and a zarr store names it in its group attributes (``seqpipe_output`` in ``zarr.json``: a file of
another name inside would be a stranger to every zarr reader); a file output has a marker ``.<name>.seqpipe-output`` beside it, naming its kind and the size and
modification time the file had when it was written, so a file the user has since put in its place is
not taken for seqpipe's; a folder output's marks also count the files and bytes it held when written, so one
the user has since added to is not replaced either. The ``partial`` of a run that crashed is cleared by the next
run only when it carries the same marks (inside a folder, beside a file: ``.<name>.partial.seqpipe-output``),
so a user's own ``<name>.partial`` is never taken for seqpipe's either; a ``partial`` whose marks name a process
that is still running belongs to another seqpipe run writing the same path, which stops this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqpipe.errors import ConfigError

MARKER = ".seqpipe-output"
#: the group attribute that marks a zarr store as a seqpipe output (its value: the kind)
ZARR_ATTRIBUTE = "seqpipe_output"
#: the group attributes beside it: the writing process, and the files and bytes the store held when written
ZARR_PID_ATTRIBUTE, ZARR_CONTENTS_ATTRIBUTE = "seqpipe_output_pid", "seqpipe_output_contents"


class Output:
    """One output at ``path`` of a ``kind`` ("predictions CSV", "genome predictions zarr", ...).

    Use: :meth:`claim` before the work (refuses a foreign ``path``, clears a stale ``partial``), write to
    :attr:`partial`, then :meth:`commit`; on failure :meth:`discard`. ``folder``: the output is a
    directory rather than a file; ``zarr``: a zarr (v3) group, a folder marked in its attributes.
    """

    def __init__(self, path: str | Path, kind: str, folder: bool = False, zarr: bool = False):
        self.path, self.kind, self.folder, self.zarr = Path(path).expanduser(), kind, folder or zarr, zarr
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._claimed = False

    def check(self) -> None:
        """Raise :class:`ConfigError` unless ``path`` may be written; changes nothing."""
        for path in (self.path, self.partial):
            if path.exists() and not self._is_ours(path):
                edited = path == self.path and self._marks(path).get("kind") == self.kind
                what = (f"was written by seqpipe as a {self.kind} but changed since{' (files added or changed in it)' if self.folder else ''}"
                        if edited else f"exists and is not a seqpipe {self.kind}")
                raise ConfigError(f"{path} {what}: refusing to replace it (move it away or choose another output path)")
        writer = self._marks(self.partial).get("pid") if self.partial.exists() else None
        if isinstance(writer, int) and writer != os.getpid() and _running(writer):
            raise ConfigError(f"{self.path} is being written by another seqpipe run (process {writer}): wait for it to "
                              "end, or choose another output path")

    def claim(self) -> None:
        """:meth:`check`, then make way for ``partial``."""
        self.check()
        self._remove(self.partial)
        self._claimed = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.folder:
            self.partial.mkdir()
            self._mark_folder()
        else:
            _write_atomically(self._partial_marker(), json.dumps({"kind": self.kind, "pid": os.getpid()}))

    def commit(self) -> None:
        """Move the finished ``partial`` to ``path``, replacing a previous output of this kind."""
        if self.folder:
            self._mark_folder(contents=_contents(self.partial))  # again: a writer may have cleared the folder
        if self.folder and self.path.exists():
            # a directory cannot be renamed over another: move the old one aside first, delete it last, with Ctrl-C
            # and SIGTERM held back meanwhile (between the renames they would leave no output at all, during the
            # deletion a half-deleted folder), and delivered when it is done
            old = self.path.with_name(f"{self.path.name}.replaced-{os.getpid()}")
            with _signals_held():
                os.replace(self.path, old)
                os.replace(self.partial, self.path)
                self._claimed = False
                shutil.rmtree(old)
            return
        os.replace(self.partial, self.path)
        self._claimed = False
        if not self.folder:
            stat = self.path.stat()
            _write_atomically(self._file_marker(), json.dumps({"kind": self.kind, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
            self._partial_marker().unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove ``partial`` (after a failure) if this output claimed it; ``path`` is left as it was."""
        if self._claimed:
            self._remove(self.partial)
            self._claimed = False

    def _mark_folder(self, contents: list[int] | None = None) -> None:
        """Mark ``partial``: its kind and, while it is written, this process; when complete (``contents`` given),
        the files and bytes it holds instead."""
        marks = {"kind": self.kind, **({"pid": os.getpid()} if contents is None else {"contents": contents})}
        if not self.zarr:
            (self.partial / MARKER).write_text(json.dumps(marks))
            return
        metadata = _read_json(self.partial / "zarr.json") or {"zarr_format": 3, "node_type": "group", "attributes": {}}
        attributes = metadata.setdefault("attributes", {})
        attributes[ZARR_ATTRIBUTE] = self.kind
        for key, name in (("pid", ZARR_PID_ATTRIBUTE), ("contents", ZARR_CONTENTS_ATTRIBUTE)):
            attributes.pop(name, None)
            if key in marks:
                attributes[name] = marks[key]
        _write_atomically(self.partial / "zarr.json", json.dumps(metadata, indent=2))

    def _marks(self, path: Path) -> dict:
        """What seqpipe's marks of ``path`` (the output or its partial) say: ``kind``, and where recorded ``pid`` and
        (a folder) ``contents``; {} without marks."""
        if not self.folder:
            return _read_json(self._partial_marker() if path == self.partial else self._file_marker())
        if not self.zarr:
            return _read_json(path / MARKER)
        attributes = _read_json(path / "zarr.json").get("attributes", {})
        return {key: attributes[name] for key, name in (("kind", ZARR_ATTRIBUTE), ("pid", ZARR_PID_ATTRIBUTE),
                                                         ("contents", ZARR_CONTENTS_ATTRIBUTE)) if name in attributes}

    def _remove(self, path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        if path == self.partial and not self.folder:
            self._partial_marker().unlink(missing_ok=True)

    def _file_marker(self) -> Path:
        return self.path.with_name(f".{self.path.name}{MARKER}")

    def _partial_marker(self) -> Path:
        return self.partial.with_name(f".{self.partial.name}{MARKER}")

    def _is_ours(self, path: Path) -> bool:
        if path == self.partial:  # left by a crashed seqpipe run only if it carries the marks claim() made
            return (path.is_dir() == self.folder) and self._marks(path).get("kind") == self.kind
        if self.folder:  # an empty folder holds nothing to lose; a marked one only what seqpipe wrote in it
            if not path.is_dir():
                return False
            marks = self._marks(path)
            if marks.get("kind") != self.kind:
                return not any(path.iterdir())
            return "contents" not in marks or list(marks["contents"]) == _contents(path)
        marker = _read_json(self._file_marker())
        if not path.is_file() or marker.get("kind") != self.kind:
            return False
        stat = path.stat()
        return (marker.get("size"), marker.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)


def run_directory(trainer) -> Path:
    """Where a run of ``trainer`` writes outputs not given a path: its logger's version folder, else its root."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def claim_all(outputs: Iterable[Output]) -> None:
    """Check every output, then claim them: a refused path fails before any ``partial`` is made or removed."""
    outputs = list(outputs)
    for output in outputs:
        output.check()
    for output in outputs:
        output.claim()


@contextmanager
def writing(*outputs: Output) -> Iterator[list[Path]]:
    """Claims every output (:func:`claim_all`), yields their ``partial`` paths to write to, commits them all when
    the block succeeds and discards them all when it fails.

        with writing(Output(path, "per-base track", folder=True)) as (partial,):
            ...  # write into partial
    """
    try:
        claim_all(outputs)
        yield [output.partial for output in outputs]
    except BaseException:
        for output in outputs:
            output.discard()
        raise
    for output in outputs:
        output.commit()


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back inside the block (on platforms with pthread_sigmask), delivered after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _contents(folder: Path) -> list[int]:
    """[files, bytes] under ``folder``, its top-level marks (the marker file, a zarr store's zarr.json) left out."""
    files = total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if Path(root) == folder and name in (MARKER, "zarr.json"):
                continue
            files, total = files + 1, total + os.path.getsize(os.path.join(root, name))
    return [files, total]


def _running(pid: int) -> bool:
    """Whether a process ``pid`` is running (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        pass
    return True


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
