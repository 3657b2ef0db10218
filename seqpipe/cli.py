"""The ``seqpipe`` command: LightningCLI's ``fit``, ``validate``, ``test`` and ``predict``, and the tools in
:data:`TOOLS` (``seqpipe track``, ``seqpipe synthetic``, ...)."""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
import re
import signal
import sys
from argparse import ArgumentError
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from seqpipe.callbacks import QuietSanityCheck, StopPredictionOnSigterm
from seqpipe.checkpoints import (
    RUN_CHECKPOINTS, BestCheckpoint, LastCheckpoint, arguments_do_not_fit, check_checkpoint_classes, check_same_task,
    class_paths, model_hparams, newest_run_checkpoint, read_checkpoint,
)
from seqpipe.cli_messages import (
    config_files, describe_parse_error, seqpipe_warnings_on_one_line, silence_irrelevant_messages,
)
from seqpipe.contracts import DataInfo, RestorableData
from seqpipe.errors import CheckpointError, ConfigError, SeqpipeError, environment_error, first_line
from seqpipe.model import SequenceModel
from seqpipe.prediction import PredictionWriter
from seqpipe.command import CTRL_C_EXIT, SIGTERM_EXIT, exit_stopped_while_starting, in_main_thread

#: subcommand -> ("module:function", help). The function takes the argument list and returns an exit code; it
#: is imported only when its subcommand runs, so core does not import the data or task modules.
TOOLS = {
    "track": ("seqpipe.data.gff_track:main", "write a per-base label track (zarr) from GFF3 or GTF annotations"),
    "synthetic": ("seqpipe.data.synthetic:main", "generate a small seeded data set (DNA motifs, series, audio)"),
    "variants": ("seqpipe.tasks.variant_effects:main", "score the variants of a VCF with a trained DNA model"),
    "explain": ("seqpipe.tasks.attribution:main", "in-silico mutagenesis and gradient x input maps, with logos"),
    "bigwig": ("seqpipe.tasks.bigwig_writer:main", "convert genome predictions (zarr) to a bigWig track"),
    "embed": ("seqpipe.tasks.embeddings:main", "one vector per DNA sequence (mean backbone features) to zarr, with the ids"),
}
#: config keys whose class the recipe chooses; ``--help`` with a config also lists these classes' options
SUBCLASS_KEYS = ("data", "model.backbone", "model.head", "model.backbone.block")
#: model arguments that change how a trained model runs, not what it is: the command line's win over a checkpoint's
INFERENCE_OPTIONS = ("chunk_size",)
#: glibc mallopt settings of keep_freed_memory: M_MMAP_THRESHOLD (-3) 64 MiB, M_TRIM_THRESHOLD (-1) 128 MiB
MALLOPT_SETTINGS = {-3: 64 << 20, -1: 128 << 20}
#: environment variables through which a user sets glibc's malloc; any of them set, keep_freed_memory changes nothing
MALLOC_SETTING_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


class SeqpipeCLI(LightningCLI):
    """Adds the prediction writer (``--prediction.path``), ``--ckpt_path best|last``, checks on checkpoints
    before they are used, and a CSVLogger and a rich progress bar by default.

    With ``--ckpt_path``, the checkpoint's :class:`~seqpipe.contracts.DataInfo` builds the model (through its
    hyper-parameters) and is handed to the data module (:class:`~seqpipe.contracts.RestorableData`) before its
    ``setup``: the model never reads the data module's state, nor the data module the model's.
    """

    #: the DataInfo of the checkpoint given with --ckpt_path (None without one)
    trained_info: DataInfo | None = None
    #: ``fit --ckpt_path``: the optimizer steps the checkpoint had trained (None without one)
    resumed_step: int | None = None

    def init_parser(self, **kwargs):
        """The parser of the command and of each subcommand; none takes an abbreviated option (``--trainer.max_epoch``
        would pass as ``--trainer.max_epochs`` where no other option starts so, and be refused where one does)."""
        parser = super().init_parser(**kwargs)
        parser.allow_abbrev = False
        if "description" not in kwargs:  # the command's own parser (each subcommand's has its method's description)
            parser.description = ("seqpipe: S4 and Mamba models for DNA, audio and time series. Train with fit, score "
                                  "with test, validate and predict (--ckpt_path best, last or a checkpoint file).")
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def parse_arguments(self, parser, args) -> None:
        """Parse; a bad option becomes one line, with the closest valid names for a misspelt one."""
        self.argv = sys.argv[1:] if args is None else [str(arg) for arg in args]
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            raise ConfigError(describe_parse_error(str(error), parser, self.argv)) from None
        except SyntaxError as error:  # a module the config names (a plug-in head), imported to read its arguments
            raise ConfigError(f"{error.filename}, line {error.lineno}: {error.msg}: a module your config or command "
                              "line names cannot be imported") from None

    def _parse_ckpt_path(self) -> None:
        """Resolve ``best``/``last``, then check the checkpoint (readable, trusted classes, same task) before its
        hyper-parameters (renamed head arguments under today's names: :func:`model_hparams`) are merged into the
        config as LightningCLI merges them, which imports the classes they name. That merge replaces the model's
        arguments by the checkpoint's: the inference options given on the command line (``--model.chunk_size`` to
        stream long records) are put back over them."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and not config.get("ckpt_path") and subcommand in ("test", "validate"):
            # the model would be freshly initialised, and its metrics those of chance
            raise ConfigError(f"{subcommand} scores a trained model: pass --ckpt_path (best, last or a checkpoint file)")
        if config is None or not config.get("ckpt_path"):
            return
        path = config.ckpt_path
        if path in RUN_CHECKPOINTS:
            path = newest_run_checkpoint(path, config.trainer.default_root_dir or ".")
            print(f"--ckpt_path {config.ckpt_path}: {path}")
            config.ckpt_path = str(path)
        elif path in ("hpc", "registry"):  # Lightning's, read without the checks below: give the file instead
            raise CheckpointError(f"--ckpt_path {path}: give the checkpoint file (or last / best); a run that SLURM "
                                  "requeues resumes from its own hpc checkpoint without --ckpt_path")
        checkpoint = read_checkpoint(path)
        hparams = model_hparams(path, checkpoint)
        if subcommand == "fit":
            self.resumed_step = checkpoint.get("global_step")
        user_modules = {class_path.rpartition(".")[0] for _, class_path in class_paths(config)}
        check_checkpoint_classes(path, hparams, user_modules)
        head = config.model.get("head") if config.get("model") else None
        check_same_task(path, hparams, head.get("class_path") if isinstance(head, Namespace) else None)
        given = {key: config.model.get(key) for key in INFERENCE_OPTIONS if config.model.get(key) is not None}
        ignored = _options_unlike_the_checkpoints(config.model, hparams, self.argv) if config.get("model") else []
        if ignored:
            rank_zero_warn(f"--ckpt_path {path}: the model is the checkpoint's, so these options of the command line "
                           f"are not used: {'; '.join(ignored)}")
        if hparams.get("data_info"):
            self.trained_info = DataInfo.from_dict(hparams["data_info"], source=str(path))
            fixed = _data_options_unlike_the_checkpoints(config.get("data"), self.trained_info, self.argv)
            if fixed:
                rank_zero_warn(f"--ckpt_path {path}: the model reads the windows it was trained on, so these options "
                               f"of the command line are not used: {'; '.join(fixed)}")
        try:  # as LightningCLI._parse_ckpt_path, with the hyper-parameters read (and renamed) above
            if hparams:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as error:  # jsonargparse's, for arguments the classes do not take
            raise arguments_do_not_fit(path, error) from None
        for key, value in given.items():
            self.config[subcommand].model[key] = value

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "predict" and self.config.predict.get("return_predictions") is None:
            # the prediction writers stream every row to disk; Lightning would also keep them all in memory
            self.config.predict.return_predictions = False
        trainer = self.config[self.subcommand].trainer
        if trainer.logger in (None, True):
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir or "."),
            )
        callbacks = trainer.callbacks if isinstance(trainer.callbacks, list) else [trainer.callbacks] if trainer.callbacks else []
        if trainer.enable_progress_bar is not False and not any(
                "ProgressBar" in str(getattr(callback, "class_path", "")) for callback in callbacks):
            trainer.callbacks = [*callbacks, Namespace(class_path="lightning.pytorch.callbacks.RichProgressBar")]

    def instantiate_trainer(self, **kwargs):
        """Lightning's Trainer; its refusal of a setting (an unknown strategy, an accelerator whose package is
        missing) is one error line."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, ImportError, MisconfigurationException) as error:
            if isinstance(error, SeqpipeError):
                raise
            raise ConfigError(f"Lightning: {first_line(error)}") from None

    def after_instantiate_classes(self) -> None:
        if self.subcommand == "predict" and self.trainer.world_size > 1:
            raise ConfigError(f"predict writes one output in input order, from one process; this trainer has "
                              f"{self.trainer.world_size} (--trainer.devices, --trainer.num_nodes): give one device")
        self.model.resuming = self.subcommand == "fit" and bool(self.config.fit.get("ckpt_path"))
        if self.trained_info is not None and isinstance(self.datamodule, RestorableData):
            self.datamodule.restore_data_info(self.trained_info)
        self.trainer.callbacks.append(StopPredictionOnSigterm() if self.subcommand == "predict" else QuietSanityCheck())

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; on a user error, or a resumed run that had already ended, remove the run directories this run
        created and left unused (:func:`_remove_unused_runs`). SIGTERM stops it with SIGTERM_EXIT, Ctrl-C (which
        Lightning turns into exit status 1) with CTRL_C_EXIT."""
        created = [d for d in _run_directories(self.trainer) if not d.exists()]
        try:
            super()._run_subcommand(subcommand)
        except SeqpipeError:
            _remove_unused_runs(created)
            raise
        except SIGTERMException:
            if self.trainer.is_global_zero:
                print(f"seqpipe: {subcommand} stopped by SIGTERM{self._resume_hint(subcommand)}", file=sys.stderr)
            raise SystemExit(SIGTERM_EXIT) from None
        except SystemExit:
            if self.trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            if self.trainer.is_global_zero and subcommand != "fit":  # fit's last checkpoint says it (LastCheckpoint)
                print(f"seqpipe: {subcommand} stopped by Ctrl-C{self._resume_hint(subcommand)}", file=sys.stderr)
            raise SystemExit(CTRL_C_EXIT) from None
        if self._trained_nothing():
            _remove_unused_runs(created)

    def _resume_hint(self, subcommand: str) -> str:
        last = next((c for c in self.trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        if subcommand == "fit" and last is not None:
            return f"; {last.resume_hint()}"
        return "; nothing was written" if subcommand == "predict" else ""

    def _trained_nothing(self) -> bool:
        """A ``fit --ckpt_path`` of a run that had already ended: its checkpoint's steps are all there are, and no
        validation ran either (a run stopped inside its last validation only validates)."""
        return (self.subcommand == "fit" and self.resumed_step is not None
                and self.trainer.global_step == self.resumed_step and not self.trainer.callback_metrics)

    def after_fit(self) -> None:
        """Name the run's checkpoints: Lightning's own last line only says that max_epochs was reached."""
        if not self.trainer.is_global_zero:
            return
        if self._trained_nothing():
            timed = self.model._requested_epochs
            of = (f"the {self.trainer.max_epochs} of its trainer.max_epochs {timed} that fit its trainer.max_time" if timed
                  else f"trainer.max_epochs {self.trainer.max_epochs}")
            print(f"--ckpt_path {self.config.fit.ckpt_path}: that run had already ended (epochs trained: "
                  f"{self.trainer.current_epoch} of {of}), so nothing was trained and no run written; a "
                  f"{'--trainer.max_epochs other than ' + str(timed) if timed else 'larger --trainer.max_epochs'} "
                  "trains on")
            return
        for callback in self.trainer.checkpoint_callbacks:
            if not callback.best_model_path:
                if isinstance(callback, BestCheckpoint):  # Lightning's own warning names a missing key only
                    print(f"no best checkpoint: {callback.monitor} was never logged (no validation ran); --ckpt_path "
                          "best has nothing to use, last.ckpt has the weights")
                continue
            if isinstance(callback, LastCheckpoint):
                print(f"last checkpoint: {callback.best_model_path}")
            else:
                score = callback.best_model_score
                metric = f"{callback.monitor} {score.item():.4g}" if score is not None else "no score"
                print(f"best checkpoint ({metric}): {callback.best_model_path}")


def _remove_unused_runs(created: list[Path]) -> None:
    """Remove the run directories in ``created`` (this run's) that hold nothing but the config.yaml and hparams.yaml
    this run saved (Lightning's loggers create them before the data is read)."""
    for directory in sorted(created, key=lambda d: len(d.parts), reverse=True):
        if directory.is_dir() and {entry.name for entry in directory.iterdir()} <= {"config.yaml", "hparams.yaml"}:
            for entry in list(directory.iterdir()):
                entry.unlink()
            directory.rmdir()


def _options_unlike_the_checkpoints(model: Namespace, hparams: dict, argv: list[str]) -> list[str]:
    """``model...`` options given on the command line ``argv`` (a recipe's own values are expected to differ from a
    run's overrides), but for INFERENCE_OPTIONS, whose value in ``model`` (the config before the checkpoint's
    hyper-parameters replace it) differs from the checkpoint's, as ``--name value (checkpoint: value)``."""
    given = _given_options(argv, "model")
    def leaves(value, prefix: str):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from leaves(inner, f"{prefix}.{key}")
        else:
            yield prefix, list(value) if isinstance(value, tuple) else value

    own = model.as_dict()
    keys = [key for key in own if key in hparams and key not in (*INFERENCE_OPTIONS, "data_info")]
    saved = dict(leaves({key: hparams[key] for key in keys}, "model"))
    unlike = []
    for name, value in leaves({key: own[key] for key in keys}, "model"):
        if name in saved and saved[name] != value and name.replace("init_args.", "") in given:
            unlike.append(f"--{name} {value!r} (checkpoint: {saved[name]!r})")
    return unlike


def _given_options(argv: list[str], group: str) -> set[str]:
    """The ``group.*`` options (``model``, ``data``) of the command line ``argv``, as ``group.name.inner``
    (``init_args.`` left out, ``=value`` too)."""
    return {arg.split("=")[0].removeprefix("--").replace("init_args.", "") for arg in argv if arg.startswith(f"--{group}.")}


def _data_options_unlike_the_checkpoints(data: Namespace | None, trained: DataInfo, argv: list[str]) -> list[str]:
    """``data.seq_len`` and ``data.pred_len`` given on the command line ``argv`` whose value differs from the
    checkpoint's series (a forecaster reads and predicts the window lengths it was trained for), as
    ``--name value (checkpoint: value)``."""
    if trained.series is None or data is None:
        return []
    given = _given_options(argv, "data")
    options = data.get("init_args") or data
    fixed = {"seq_len": trained.series.seq_len, "pred_len": trained.series.pred_len}
    return [f"--data.{name} {options.get(name)!r} (checkpoint: {value!r})" for name, value in fixed.items()
            if f"data.{name}" in given and options.get(name) != value]


def _run_directories(trainer) -> list[Path]:
    """The log directories of ``trainer`` and their parents up to the filesystem root."""
    directories = set()
    for logger in trainer.loggers:
        if logger.log_dir:
            directories.update([Path(logger.log_dir).resolve(), *Path(logger.log_dir).resolve().parents])
    return list(directories)


def run_registered_tool(name: str, argv: list[str]) -> int:
    """Run the tool registered in :data:`TOOLS` as ``name`` with ``argv``; its exit code."""
    module, function = TOOLS[name][0].split(":")
    code = getattr(importlib.import_module(module), function)(argv)
    return 0 if code is None else int(code)


def _make_cli(args: list[str] | None) -> SeqpipeCLI:
    return SeqpipeCLI(
        SequenceModel,
        LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
        args=args,
    )


def _print_help(argv: list[str]) -> None:
    """LightningCLI's help; with a config, then the options of the classes it chooses (data, backbone, head, block);
    at the top level, then the tools."""
    try:
        _make_cli(argv)
    except SystemExit:
        pass
    if argv[0] not in ("-h", "--help"):
        for key, class_path in _config_subclasses(argv):
            print(f"\n{key}: {class_path} (chosen by the config; --{key}.help CLASS shows another class)")
            try:
                _make_cli([argv[0], f"--{key}.help", class_path])
            except SystemExit:
                pass
        return
    print("\ntools:")
    for name, (_, description) in TOOLS.items():
        print(f"  {name:<12}{description} (seqpipe {name} --help)")


def _config_subclasses(argv: list[str]) -> list[tuple[str, str]]:
    """``(key, class_path)`` for the keys in SUBCLASS_KEYS that the ``--config`` files in ``argv`` set."""
    chosen = {}
    for path in config_files(argv):
        for key, class_path in class_paths(yaml.safe_load(path.read_text()) or {}):
            key = key.removesuffix(".class_path").replace("init_args.", "")
            if key in SUBCLASS_KEYS:
                chosen[key] = class_path
    if chosen:  # a recipe that sets the backbone's arguments without naming its class uses the default one
        chosen.setdefault("model.backbone", "seqpipe.backbone.Backbone")
    return sorted(chosen.items(), key=lambda item: SUBCLASS_KEYS.index(item[0]))


def keep_freed_memory() -> bool:
    """Have glibc serve blocks of up to 64 MiB from its heap and keep up to 128 MiB free at the heap's top
    (MALLOPT_SETTINGS), rather than map such blocks anew, give them back when freed and fault their pages in again
    at the next allocation. A recipe's activations on the CPU are such blocks (an S4 layer's spectra at 64
    sequences of 500 bp: 16 MB each): an epoch of the DNA recipe on 2 cores took 4-5% less time, at 2-3% more
    peak memory (bench/RESULTS.md). True where applied: glibc, and none of MALLOC_SETTING_VARIABLES set (a user's
    own malloc settings stay in force). Results do not depend on it."""
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in MALLOC_SETTING_VARIABLES):
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in MALLOPT_SETTINGS.items())


def _sigterm_while_starting(signum, frame) -> None:
    """SIGTERM before Lightning takes the signal (parsing, building the model and data, a stage's setup): raised as
    Lightning's SIGTERMException, so that outputs already claimed are discarded and the run ends in one line. Once
    Lightning's handler is installed it calls this one too: then it does nothing, and the run stops after its batch."""
    if signal.getsignal(signal.SIGTERM) is _sigterm_while_starting:
        raise SIGTERMException


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` replaces ``sys.argv[1:]`` (tests call ``main(["fit", "--config", ...])``)."""
    keep_freed_memory()
    argv = sys.argv[1:] if args is None else [str(arg) for arg in args]
    # as under `python -m`: a head or data module named in a config or a checkpoint may live in the working directory
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    silence_irrelevant_messages()
    seqpipe_warnings_on_one_line()
    if argv and argv[0] in TOOLS:
        raise SystemExit(run_registered_tool(argv[0], argv[1:]))
    if not argv or "-h" in argv or "--help" in argv:
        _print_help(argv or ["--help"])
        raise SystemExit(0)
    previous = signal.signal(signal.SIGTERM, _sigterm_while_starting) if in_main_thread() else None
    try:
        _make_cli(None if args is None else argv)
    except (KeyboardInterrupt, SIGTERMException) as stop:  # before the trainer ran: nothing to resume
        exit_stopped_while_starting(stop)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"seqpipe: error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _user_error(error: BaseException) -> SeqpipeError | None:
    """The SeqpipeError behind ``error``: itself, or one that jsonargparse wrapped while instantiating a class, or
    one a DataLoader worker raised; or Lightning's refusal of its settings (``--trainer.accelerator gpu`` without a
    GPU) as a ConfigError."""
    seen = set()
    while error is not None and id(error) not in seen:
        # a DataLoader worker's error comes back holding the worker's traceback as text (as a RuntimeError, or as
        # its own type when that takes one string)
        if "in DataLoader worker" in str(error):
            worker = re.search(r"^seqpipe\.errors\.\w+: (.+)\Z", str(error).strip(), re.M)
            if worker:
                return SeqpipeError(worker.group(1))
        if isinstance(error, SeqpipeError):
            return error
        if (environment := environment_error(error)) is not None:
            return environment
        if isinstance(error, MisconfigurationException):
            return ConfigError(f"Lightning: {error}")
        if isinstance(error, RuntimeError) and str(error).startswith("Early stopping conditioned on metric"):
            return ConfigError(f"EarlyStopping: {first_line(error)}")
        if isinstance(error, torch.OutOfMemoryError) or (isinstance(error, RuntimeError)
                                                          and "DefaultCPUAllocator: can't allocate memory" in str(error)):
            return SeqpipeError(f"out of memory ({first_line(error)[:160]}): lower --data.batch_size, crop long "
                                "sequences (--data.max_length, --data.window_length) or stream them in chunks "
                                "(--model.chunk_size)")
        if isinstance(error, RuntimeError) and str(error).startswith("Error(s) in loading state_dict"):
            detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
            return CheckpointError(f"--ckpt_path: the checkpoint's weights do not fit the model the config builds (a "
                                   f"checkpoint saved without its model's config, from Python?): {detail}")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    main()
