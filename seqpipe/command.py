"""The ``seqpipe`` command's entry point: the command line's libraries (Lightning, torch) are imported inside it,
so that Ctrl-C or SIGTERM while they load (a few seconds) ends in one line and exit status 130 / 143, not a
traceback or a silent death."""

from __future__ import annotations

import signal
import sys
import threading
from typing import NoReturn

#: exit status of a command stopped by Ctrl-C (128 + 2, SIGINT)
CTRL_C_EXIT = 130
#: exit status of a command stopped by SIGTERM (128 + 15, as a shell reports a process killed by it)
SIGTERM_EXIT = 143


class Terminated(BaseException):
    """SIGTERM, raised where the program is (as Ctrl-C raises KeyboardInterrupt), so that outputs under way are
    discarded; not an Exception, which a tool's own error handling would catch."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler that raises :class:`Terminated`."""
    raise Terminated


def in_main_thread() -> bool:
    """Whether this is the main thread, the only one where a signal handler can be set."""
    return threading.current_thread() is threading.main_thread()


def stop_name_and_status(stop: BaseException) -> tuple[str, int]:
    """How a stop is said and the exit status it gives: ("Ctrl-C", 130) for a KeyboardInterrupt, else ("SIGTERM", 143)."""
    return ("Ctrl-C", CTRL_C_EXIT) if isinstance(stop, KeyboardInterrupt) else ("SIGTERM", SIGTERM_EXIT)


def exit_stopped_while_starting(stop: BaseException) -> NoReturn:
    """One line for a command stopped before it ran anything, and its exit status."""
    name, status = stop_name_and_status(stop)
    print(f"seqpipe: stopped by {name} while starting; nothing was run", file=sys.stderr)
    raise SystemExit(status) from None


def main(args: list[str] | None = None) -> None:
    """``seqpipe``: :func:`seqpipe.cli.main` once it is imported."""
    main_thread = in_main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        from seqpipe.cli import main as cli_main
    except (KeyboardInterrupt, Terminated) as stop:
        exit_stopped_while_starting(stop)
    finally:
        if main_thread:  # the command line sets its own (seqpipe.cli.main)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    cli_main(args)
