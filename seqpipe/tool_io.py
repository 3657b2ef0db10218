"""Plumbing shared by the command-line tools (``seqpipe variants``, ``explain``, ``embed``, ``bigwig``, ``track``,
``synthetic``):
their argument parser (usage from the module docstring; the checkpoint options of the DNA tools), and
:func:`run_tool`, which turns a :class:`~seqpipe.errors.SeqpipeError` into one ``seqpipe: error:`` line and exit
code 2. Their outputs go through :func:`seqpipe.outputs.writing` (written under ``<path>.partial``, renamed
when complete, a path that is not a seqpipe output of the same kind refused before any work)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from seqpipe.command import Terminated, in_main_thread, raise_terminated, stop_name_and_status
from seqpipe.errors import ConfigError, SeqpipeError, environment_error



def output_prefix(text: str, suffixes: tuple[str, ...]) -> Path:
    """``--out PREFIX`` of a tool that writes PREFIX<suffix> files (``suffixes``: ".tsv", ...); a folder (``out/``),
    whose files would land beside it, and a prefix ending in one of the suffixes (``scores.tsv.tsv``) are refused."""
    if text.endswith(("/", os.sep)):
        raise ConfigError(f"--out {text}: a prefix of file names, not a folder; give e.g. {Path(text) / 'scores'}")
    ending = next((suffix for suffix in suffixes if text.endswith(suffix)), None)
    if ending is not None:
        raise ConfigError(f"--out {text}: a prefix, to which the tool adds {', '.join(suffixes)}; give "
                          f"--out {text.removesuffix(ending)}")
    return Path(text)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {text}")
    return value


def tool_parser(prog: str, doc: str, checkpoint: bool = True) -> argparse.ArgumentParser:
    """A parser whose description is ``doc``'s first paragraph and whose epilog is the rest after the usage
    paragraph; ``checkpoint``: with ``--ckpt_path`` and ``--trust_module`` (the DNA tools that load a model)."""
    paragraphs = doc.split("\n\n", 2)
    parser = argparse.ArgumentParser(prog=prog, description=paragraphs[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=paragraphs[2] if len(paragraphs) > 2 else None, allow_abbrev=False)
    if checkpoint:
        parser.add_argument("--ckpt_path", required=True, help="checkpoint of a DNA model trained with seqpipe fit")
        parser.add_argument("--trust_module", action="append", default=[], metavar="MODULE",
                            help="a module whose classes the checkpoint may name (your own head); seqpipe, torch, "
                                 "lightning and torchmetrics are always allowed (repeatable)")
    return parser


def run_tool(tool: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parses ``argv`` and runs ``tool`` on the options; a user error is printed as one line and gives exit code 2,
    success 0. Ctrl-C and SIGTERM stop it in one line with exit code 130 / 143, its unfinished outputs discarded
    (:func:`seqpipe.outputs.writing` discards them on any exception)."""
    options = parser.parse_args(argv)
    main_thread = in_main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        tool(options)
    except SeqpipeError as error:
        print(f"seqpipe: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if (environment := environment_error(error)) is None:
            raise
        print(f"seqpipe: error: {environment}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = stop_name_and_status(stop)
        print(f"{parser.prog}: stopped by {name}; nothing was written", file=sys.stderr)
        return status
    finally:
        if main_thread:  # a handler set outside Python reads as None: the default stands for it
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0
