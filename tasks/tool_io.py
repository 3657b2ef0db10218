"""Plumbing shared by the command-line tools (``seqpipe variants``, ``seqpipe explain``, the bigWig converter):
their outputs follow the rule of :mod:`seqpipe.outputs` (written under ``<path>.partial``, renamed when complete,
a path that is not a seqpipe output of the same kind is refused before any work), and a
:class:`~seqpipe.errors.SeqpipeError` becomes one ``seqpipe: error:`` line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqpipe.errors import SeqpipeError
from seqpipe.outputs import Output


@contextmanager
def tool_outputs(*outputs: Output) -> Iterator[list[Path]]:
    """Claims every output (so a refused path fails before the work), yields their ``partial`` paths to write
    to, commits them all when the block succeeds and discards them when it fails."""
    try:
        for output in outputs:
            output.claim()  # a refused one stops here; those claimed before it are discarded below
        yield [output.partial for output in outputs]
    except BaseException:
        for output in outputs:
            output.discard()
        raise
    for output in outputs:
        output.commit()


def run_tool(tool: Callable[[], None]) -> int:
    """Runs ``tool``; a user error is printed as one line and gives exit code 2, success 0."""
    try:
        tool()
    except SeqpipeError as error:
        print(f"seqpipe: error: {error}", file=sys.stderr)
        return 2
    return 0
