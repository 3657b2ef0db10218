"""What the ``seqpipe`` command prints besides results: jsonargparse's parse errors as one line with the closest
option names (:func:`describe_parse_error`), seqpipe's warnings on one line, and Lightning's messages that do not
concern a seqpipe user left out."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path

import yaml

from seqpipe.errors import location


#: Lightning's messages that do not concern a seqpipe user, matched exactly (never a blanket filter)
_IRRELEVANT_LOGS = (
    "💡 Tip: For seamless cloud logging",  # litlogger advertisement
    "💡 Tip: For seamless cloud uploads",  # litmodels advertisement
    # the model's best/last checkpoints replace the trainer's default one, as intended
    "The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
    "passed to Trainer: ModelCheckpoint",
    # a stop says itself in one seqpipe line (Ctrl-C, SIGTERM)
    "\nDetected KeyboardInterrupt, attempting graceful shutdown",
    "Received SIGTERM",
    # on a machine without them (an accelerator that is there and used is still said)
    "GPU available: False, used: False",
    "TPU available: False",
    "HPU available: False",
)


class _DropIrrelevantLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = re.sub(r"^\[rank: \d+\] ", "", record.getMessage())  # as every process of a DDP run says it
        return not any(message.startswith(text) for text in _IRRELEVANT_LOGS)


def silence_irrelevant_messages() -> None:
    # Lightning 2.6 calls a torch API that torch 2.11 deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # test/predict/resume run in a new run directory; seqpipe prints which checkpoint it uses
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # `seqpipe --help` builds the parser a second time to list the chosen classes' options
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    # train/loss is logged every epoch too, so a small set's epoch of fewer batches than log_every_n_steps loses nothing
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging interval")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.signal_connector"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropIrrelevantLogs) for f in log.filters):
            log.addFilter(_DropIrrelevantLogs())


def seqpipe_warnings_on_one_line() -> None:
    """seqpipe's own warnings (``rank_zero_warn`` in its data modules) as one ``seqpipe: warning: ...`` line, without
    the source file and code line Python adds to a warning; every other warning as before."""
    previous = warnings.formatwarning
    if getattr(previous, "seqpipe_one_line", False):
        return

    def format_warning(message, category, filename, lineno, line=None) -> str:
        seqpipe_files = {getattr(module, "__file__", None) for name, module in list(sys.modules.items())
                         if name == "seqpipe" or name.startswith("seqpipe.")}
        if filename in seqpipe_files:
            return f"seqpipe: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    format_warning.seqpipe_one_line = True
    warnings.formatwarning = format_warning


def describe_parse_error(message: str, parser, argv: list[str]) -> str:
    """jsonargparse's error as one line: an unknown option with the closest valid names (difflib), and, for a
    config file's key or YAML, the file."""
    given_options = [arg.split("=")[0] for arg in argv if arg.startswith("--")]
    subcommands = getattr(parser, "_subcommands_action", None)
    subparser = next((subcommands.choices[a] for a in argv if subcommands and a in subcommands.choices), parser)
    not_accepted = re.search(r"Option '([^']+)' is not accepted", message)
    owners = re.findall(r"class_path[ =]'([\w.]+)'", message)
    if not_accepted and owners:
        name = not_accepted.group(1)
        given = next((o for o in given_options if o.endswith(f".{name}")), None)
        if given is None:  # from a config file
            parent = re.search(r'Parser key "([\w.]+)"', message)
            where = f" (under {parent.group(1)})" if parent else ""
            file = _config_with_key(argv, f"{parent.group(1)}.{name}" if parent else name)
            return _did_you_mean(f"{file}{name}{where} is not an option of {owners[-1]}", name, _init_parameters(owners[-1]))
        prefix = given.rpartition(".")[0]
        choices = [f"{prefix}.{parameter}" for parameter in _init_parameters(owners[-1])]
        return _did_you_mean(f"{given} is not an option of {owners[-1]}", given, choices)
    unrecognized = re.match(r"unrecognized arguments: (\S+)", message)
    if unrecognized:
        given = unrecognized.group(1).split("=")[0]
        return _did_you_mean(f"{given} is not an option", given, list(subparser._option_string_actions))
    not_taken = re.search(r"does not accept option '([\w.]+)'", message)
    if not_taken:  # a config file's key
        key = not_taken.group(1)
        choices = [option.removeprefix("--") for option in subparser._option_string_actions]
        return _did_you_mean(f"{_config_with_key(argv, key)}{key} is not an option", key, choices)
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    wrong_type = _describe_wrong_type(one_line, argv)
    if wrong_type:
        return wrong_type
    if message.startswith("Problems parsing config"):
        for path in config_files(argv):
            try:
                yaml.safe_load(path.read_text())
            except yaml.MarkedYAMLError as error:
                mark = error.problem_mark or error.context_mark
                return (f"{location(path, line=mark.line + 1 if mark else None)}: not valid YAML: "
                        f"{error.problem or error.context}" + (f", column {mark.column + 1}" if mark else ""))
    return one_line


def _describe_wrong_type(message: str, argv: list[str]) -> str | None:
    """``--data.batch_size: expected int, got 'x'`` for a value of the wrong type (jsonargparse nests the option's
    key in its class's: ``Parser key "data": ... Parser key "batch_size": Expected a <class 'int'>. Got value: x``),
    naming the config file when the value came from one; None for other errors. ``message``: on one line."""
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    value = re.search(r"(?:Got value|Given value): (.+?)(?: - |$)", message)
    if not keys or not value or "NestedArg" in value.group(1):
        return None
    innermost = message[message.rfind(f'Parser key "{keys[-1]}"'):value.start()]  # the option's own types
    subtypes = re.search(r"Subtypes: \[(.*?)\] Errors", innermost)
    pattern = r"<class '(\w+)'>|(\w+\[\w+\])"
    if subtypes and re.sub(pattern + r"|[,\s]", "", subtypes.group(1)):
        return None  # a type this line cannot name (Literal[...], dict[...]): jsonargparse's own words say more
    types = re.findall(pattern, subtypes.group(1)) if subtypes else re.findall(r"Expected an? <class '(\w+)'>()", innermost)
    if not types:
        return None
    names = list(dict.fromkeys("null" if name == "NoneType" else name or generic for name, generic in types))
    key = ".".join(keys)
    given = any(arg.split("=")[0].replace(".init_args.", ".") == f"--{key}" for arg in argv)
    where = "" if given else _config_with_key(argv, key)
    return f"{where}{'' if where else '--'}{key}: expected {' or '.join(names)}, got {value.group(1)!r}"


def config_files(argv: list[str]) -> list[Path]:
    """The ``--config`` files named in ``argv`` that exist."""
    paths = [arg.split("=", 1)[1] if arg.startswith("--config=") else argv[index + 1]
             for index, arg in enumerate(argv)
             if arg.startswith("--config=") or (arg in ("--config", "-c") and index + 1 < len(argv))]
    return [Path(path) for path in paths if Path(path).is_file()]


def _config_with_key(argv: list[str], dotted: str) -> str:
    """``"path: "`` for the last ``--config`` file in ``argv`` that sets ``dotted`` (``model.head.kmer_size``, its
    ``init_args`` levels left out), the one whose value counts, or ``""``."""
    for path in reversed(config_files(argv)):
        try:
            node = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        for part in dotted.split("."):
            node = node.get("init_args", node) if isinstance(node, dict) and part not in node else node
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return f"{path}: "
    return ""


def _did_you_mean(problem: str, given: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(given, choices, n=3, cutoff=0.6)
    return f"{problem}; did you mean {' or '.join(close)}?" if close else f"{problem} (see --help)"


def _init_parameters(class_path: str) -> list[str]:
    """The keyword arguments of ``class_path`` (already named by the user's config)."""
    module, _, name = class_path.rpartition(".")
    try:
        signature = inspect.signature(getattr(importlib.import_module(module), name).__init__)
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [p.name for p in list(signature.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
