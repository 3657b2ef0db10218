"""The ``seqpipe`` command: LightningCLI with ``fit``, ``validate``, ``test`` and ``predict``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from jsonargparse import Namespace

from seqpipe.errors import ConfigError, SeqpipeError
from seqpipe.model import SequenceModel
from seqpipe.prediction import PredictionWriter

#: model arguments that change how a trained model runs, not what it is: the command line's win over a checkpoint's
INFERENCE_OPTIONS = ("chunk_size",)


class SeqpipeCLI(LightningCLI):
    """Adds the prediction writer (``--prediction.path``); CSVLogger and a rich progress bar by default."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def before_instantiate_classes(self) -> None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in ("best", "last", "hpc", "registry") and not Path(ckpt_path).is_file():
            raise ConfigError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        if self.subcommand == "predict" and self.config.predict.get("return_predictions") is None:
            # the prediction writers stream every row to disk; Lightning would also keep them all in memory
            self.config.predict.return_predictions = False
        trainer = self.config[self.subcommand].trainer
        if trainer.logger in (None, True):
            trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=trainer.default_root_dir or "."),
            )
        if trainer.enable_progress_bar is not False and not trainer.callbacks:
            trainer.callbacks = [Namespace(class_path="lightning.pytorch.callbacks.RichProgressBar")]


    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's arguments by the checkpoint's; the inference options given on the
        command line (``--model.chunk_size`` to stream long records) are put back over them."""
        subcommand = self.config.get("subcommand")
        given = {}
        if subcommand:
            model = self.config[subcommand].model
            given = {key: model.get(key) for key in INFERENCE_OPTIONS if model.get(key) is not None}
        super()._parse_ckpt_path()
        for key, value in given.items():
            self.config[subcommand].model[key] = value

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; on a user error remove the run directories this run created while they are still empty
        (Lightning's loggers create theirs before the data is read)."""
        created = [d for d in _run_directories(self.trainer) if not d.exists()]
        try:
            super()._run_subcommand(subcommand)
        except SeqpipeError:
            for directory in sorted(created, key=lambda d: len(d.parts), reverse=True):
                if directory.is_dir() and not any(directory.iterdir()):
                    directory.rmdir()
            raise


def _run_directories(trainer) -> list[Path]:
    """The log directories of ``trainer`` and their parents up to the filesystem root."""
    directories = set()
    for logger in trainer.loggers:
        if logger.log_dir:
            directories.update([Path(logger.log_dir).resolve(), *Path(logger.log_dir).resolve().parents])
    return list(directories)


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` replaces ``sys.argv[1:]`` (tests call ``main(["fit", "--config", ...])``)."""
    # Lightning 2.6 calls a torch API that torch 2.11 deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        SeqpipeCLI(
            SequenceModel,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"seqpipe: error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


def _user_error(error: BaseException) -> SeqpipeError | None:
    """The SeqpipeError behind ``error``: itself, or one that jsonargparse wrapped while instantiating a class."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SeqpipeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    main()
