"""The ``seqpipe`` command's entry point: the command line's libraries (Lightning, torch) are imported inside it,
so that Ctrl-C while they load (a few seconds) ends in one line and exit status 130, not a traceback."""

from __future__ import annotations

import sys

#: exit status of a command stopped by Ctrl-C (128 + 2, SIGINT)
CTRL_C_EXIT = 130


def main(args: list[str] | None = None) -> None:
    """``seqpipe``: :func:`seqpipe.cli.main` once it is imported."""
    try:
        from seqpipe.cli import main as cli_main
    except KeyboardInterrupt:
        print("seqpipe: stopped by Ctrl-C while starting; nothing was run", file=sys.stderr)
        raise SystemExit(CTRL_C_EXIT) from None
    cli_main(args)
