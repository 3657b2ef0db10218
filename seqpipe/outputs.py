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
not taken for seqpipe's. The ``partial`` of a run that crashed is cleared by the next run only when it
carries the same marks (inside a folder, beside a file: ``.<name>.partial.seqpipe-output``), so a user's
own ``<name>.partial`` is never taken for seqpipe's either.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqpipe.errors import ConfigError

MARKER = ".seqpipe-output"
#: the group attribute that marks a zarr store as a seqpipe output (its value: the kind)
ZARR_ATTRIBUTE = "seqpipe_output"


class Output:
    """One output at ``path`` of a ``kind`` ("predictions CSV", "genome predictions zarr", ...).

    Use: :meth:`claim` before the work (refuses a foreign ``path``, clears a stale ``partial``), write to
    :attr:`partial`, then :meth:`commit`; on failure :meth:`discard`. ``folder``: the output is a
    directory rather than a file; ``zarr``: a zarr (v3) group, a folder marked in its attributes.
    """

    def __init__(self, path: str | Path, kind: str, folder: bool = False, zarr: bool = False):
        self.path, self.kind, self.folder, self.zarr = Path(path), kind, folder or zarr, zarr
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._claimed = False

    def check(self) -> None:
        """Raise :class:`ConfigError` unless ``path`` may be written; changes nothing."""
        for path in (self.path, self.partial):
            if path.exists() and not self._is_ours(path):
                edited = (path == self.path and not self.folder and path.is_file()
                          and _read_json(self._file_marker()).get("kind") == self.kind)
                what = f"was written by seqpipe as a {self.kind} but changed since" if edited else \
                    f"exists and is not a seqpipe {self.kind}"
                raise ConfigError(f"{path} {what}: refusing to replace it (move it away or choose another output path)")

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
            _write_atomically(self._partial_marker(), json.dumps({"kind": self.kind}))

    def commit(self) -> None:
        """Move the finished ``partial`` to ``path``, replacing a previous output of this kind."""
        if self.folder:
            self._mark_folder()  # again: a writer may have cleared the folder it was given
        if self.folder and self.path.exists():
            # a directory cannot be renamed over another: move the old one aside first, delete it last
            old = self.path.with_name(f"{self.path.name}.replaced-{os.getpid()}")
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

    def _mark_folder(self) -> None:
        if not self.zarr:
            (self.partial / MARKER).write_text(json.dumps({"kind": self.kind}))
            return
        metadata = _read_json(self.partial / "zarr.json") or {"zarr_format": 3, "node_type": "group", "attributes": {}}
        metadata.setdefault("attributes", {})[ZARR_ATTRIBUTE] = self.kind
        _write_atomically(self.partial / "zarr.json", json.dumps(metadata, indent=2))

    def _folder_kind(self, folder: Path) -> str | None:
        """The kind the marks in ``folder`` name (a zarr store's attribute, another folder's marker file), or None."""
        if self.zarr:
            return _read_json(folder / "zarr.json").get("attributes", {}).get(ZARR_ATTRIBUTE)
        return _read_json(folder / MARKER).get("kind")

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
            if self.folder:
                return path.is_dir() and self._folder_kind(path) == self.kind
            return _read_json(self._partial_marker()).get("kind") == self.kind
        if self.folder:  # an empty folder holds nothing to lose
            return path.is_dir() and (self._folder_kind(path) == self.kind or not any(path.iterdir()))
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
