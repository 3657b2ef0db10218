"""Plumbing shared by the command-line tools (``seqpipe variants``, ``seqpipe explain``): their outputs are
written under ``<path>.partial`` and renamed when complete, existing files are never replaced, and a
:class:`~seqpipe.errors.SeqpipeError` becomes one ``seqpipe: error:`` line and exit code 2."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqpipe.errors import ConfigError, SeqpipeError


@contextmanager
def atomic_outputs(*paths: Path) -> Iterator[list[Path]]:
    """Yields the ``<path>.partial`` of each path to write to; renames them all to their paths when the block
    succeeds, removes them when it fails. An existing path is refused (one line), never replaced."""
    for path in paths:
        if path.exists():
            raise ConfigError(f"{path} exists; seqpipe does not replace files: remove it or choose another --out")
    partials = [path.with_name(path.name + ".partial") for path in paths]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partials
    except BaseException:
        for partial in partials:
            if partial.is_dir():
                shutil.rmtree(partial)
            else:
                partial.unlink(missing_ok=True)
        raise
    for partial, path in zip(partials, paths):
        os.replace(partial, path)


def run_tool(tool: Callable[[], None]) -> int:
    """Runs ``tool``; a user error is printed as one line and gives exit code 2, success 0."""
    try:
        tool()
    except SeqpipeError as error:
        print(f"seqpipe: error: {error}", file=sys.stderr)
        return 2
    return 0
