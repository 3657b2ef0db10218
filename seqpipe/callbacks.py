"""Training callbacks: cross-cutting behaviour kept out of the model and the data modules.

Where callbacks live: those any head can use are in the core — here (run control), in :mod:`seqpipe.checkpoints`
(the checkpoint files and the state they carry) and :mod:`seqpipe.prediction` (the CSV of every head's rows); a
callback or writer that reads one task's outputs lives in ``tasks/`` beside that head
(:mod:`seqpipe.tasks.genome_writer`, :mod:`seqpipe.tasks.forecast_plot`).
"""

from __future__ import annotations

import time
import warnings

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seqpipe.errors import ConfigError


class SequenceLengthWarmup(Callback):
    """Train on short windows first, then longer ones (the sequence-length warm-up of HyenaDNA).

    Args:
        stages: ``[{"epochs": 2, "window_length": 1024, "batch_size": 64}, ...]`` — each stage's training
            window length and batch size for its number of epochs, in order; after the last stage the data
            module's own ``window_length`` and ``batch_size`` apply. Validation, test and prediction always
            use the data module's own values, so validation scores stay comparable across stages.

    The data module asks :meth:`training_window` for the window length and batch size whenever it builds the
    training loader (``length_warmup`` is set on it; see :meth:`seqpipe.data.base.SplitDataModule.training_window`);
    training loaders are rebuilt every epoch (``reload_dataloaders_every_n_epochs`` is set to 1). The stage follows
    the trainer's epoch at that moment, so a run resumed from a checkpoint trains on the stage of its epoch.
    """

    def __init__(self, stages: list[dict[str, int]]):
        for number, stage in enumerate(stages, start=1):
            if set(stage) != {"epochs", "window_length", "batch_size"} or min(stage.values()) < 1:
                raise ConfigError(
                    f"SequenceLengthWarmup stage {number} is {stage}: give positive epochs, window_length and batch_size"
                )
        self.stages = [dict(stage) for stage in stages]

    def stage_at(self, epoch: int) -> dict[str, int] | None:
        """The stage that covers ``epoch`` (0-based), or None after the last one."""
        for stage in self.stages:
            if epoch < stage["epochs"]:
                return stage
            epoch -= stage["epochs"]
        return None

    def training_window(self, epoch: int, window_length: int, batch_size: int) -> tuple[int, int]:
        """(window length, batch size) of training epoch ``epoch``: its stage's (its window no longer than the data
        module's ``window_length``: a warm-up never lengthens windows), or the data module's own after the last
        stage."""
        stage = self.stage_at(epoch)
        shape = (min(stage["window_length"], window_length), stage["batch_size"]) if stage else (window_length, batch_size)
        if epoch == 0 or stage is not self.stage_at(epoch - 1):
            rank_zero_info(f"sequence-length warm-up: epoch {epoch} trains on windows of {shape[0]} in batches of {shape[1]}")
        return shape

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "length_warmup"):
            raise ConfigError(
                f"SequenceLengthWarmup needs a data module of windows it can shorten (GenomeData, DNAPretrainData); "
                f"{type(datamodule).__name__} is not one"
            )
        trainer.reload_dataloaders_every_n_epochs = 1
        datamodule.length_warmup = self


class StopPredictionOnSigterm(Callback):
    """Stops ``predict`` after the batch during which SIGTERM arrived (Lightning checks for it only while
    fitting and evaluating), so the prediction writers remove their partial files and the run exits non-zero."""

    def on_predict_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException


class QuietSanityCheck(Callback):
    """Hides torchmetrics' "No positive/negative samples" during the sanity check: its two validation batches
    often miss a class (or hold only one), which says nothing about the data. Outside it the warnings show."""

    def __init__(self):
        self._filters: warnings.catch_warnings | None = None

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._filters = warnings.catch_warnings()
        self._filters.__enter__()
        warnings.filterwarnings("ignore", message="No positive samples")
        warnings.filterwarnings("ignore", message="No negative samples")

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._filters is not None:
            self._filters.__exit__(None, None, None)
            self._filters = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_sanity_check_end(trainer, pl_module)


class TokenThroughput(Callback):
    """Logs ``train/tokens_per_s``: valid tokens of the training batches (``lengths``, else all of ``x``)
    per second of wall time, over each epoch (over the rest of it, in a run resumed mid-epoch)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch does not start its epoch again

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tokens, self._start = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lengths = batch.get("lengths")
        self._tokens += int(lengths.sum()) if lengths is not None else batch["x"].shape[0] * batch["x"].shape[1]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        pl_module.log("train/tokens_per_s", self._tokens / max(seconds, 1e-9))
        rank_zero_info(f"epoch {trainer.current_epoch}: {self._tokens / max(seconds, 1e-9):,.0f} training tokens/s")
