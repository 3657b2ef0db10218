"""Callbacks the CLI tests name in their configs (``class_path: interrupt_helpers.SigtermAfterEpoch``)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SigtermAfterEpoch(Callback):
    """Sends this process SIGTERM at the end of training epoch ``epoch`` (0-based), as a scheduler would."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermAfterStep(Callback):
    """Sends this process SIGTERM at the end of training batch ``step`` (1-based global step), mid-epoch."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class CtrlCInValidation(Callback):
    """Raises KeyboardInterrupt as the validation of training epoch ``epoch`` starts its first batch."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            raise KeyboardInterrupt


class CtrlCInTraining(Callback):
    """Raises KeyboardInterrupt mid-epoch: inside the training batch after global step ``step``, after its backward
    pass and before its optimizer step (its dropout drawn), or ``at_end`` of the batch that makes that step."""

    def __init__(self, step: int = 1, at_end: bool = False):
        self.step, self.at_end = step, at_end

    def on_after_backward(self, trainer, pl_module) -> None:
        if not self.at_end and trainer.global_step == self.step:
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.at_end and trainer.global_step == self.step:
            raise KeyboardInterrupt
