"""What every seqpipe data module shares: one loader per split, the description of its data (the contract,
:mod:`seqpipe.contracts`), and the seeded stratified hold-out of a validation share."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqpipe.contracts import DataInfo
from seqpipe.data.resumable import ResumableLoader, run_seed
from seqpipe.errors import ConfigError


class SplitDataModule(L.LightningDataModule):
    """A data module whose four Lightning loader hooks all go through ``_loader(split)``.

    ``split`` is "train", "val", "test" or "predict"; subclasses shuffle and augment for "train" only, in the loader
    :meth:`split_loader` builds.

    ``setup`` sets ``data_info``, the :class:`~seqpipe.contracts.DataInfo` the model is built from: fitted on the
    training data, or, when a model is restored from a checkpoint, ``trained_info`` — the checkpoint's, handed
    over by :meth:`restore_data_info` before ``setup`` — so new data gets the classes, scaler and vocabulary
    the model was trained with.
    """

    def __init__(self):
        super().__init__()
        self.data_info: DataInfo | None = None
        self.trained_info: DataInfo | None = None

    def training_window(self, window_length: int, batch_size: int) -> tuple[int, int]:
        """(window length, batch size) of the training loader built now: the data module's own, or the stage of
        the current epoch when a :class:`~seqpipe.callbacks.SequenceLengthWarmup` set ``length_warmup`` (window
        data modules only)."""
        warmup = getattr(self, "length_warmup", None)
        if warmup is None or self.trainer is None:
            return window_length, batch_size
        return warmup.training_window(self.trainer.current_epoch, window_length, batch_size)

    def split_loader(self, split: str, dataset: Dataset, seed: int | None = None, **loader_args) -> DataLoader:
        """The loader of ``split`` (``loader_args`` as a DataLoader's). The training one resumes a run stopped
        mid-epoch exactly (:class:`~seqpipe.data.resumable.ResumableLoader`), its epochs seeded with ``seed`` (by
        default the run's, ``seed_everything``). Every loader has a generator of its own, so starting workers
        never draws from torch's global one, which dropout draws from (a resumed run starts them at other times)."""
        if split != "train":
            return DataLoader(dataset, **{"generator": torch.Generator(), **loader_args})
        return ResumableLoader(dataset, seed=run_seed() if seed is None else seed, epoch=self._current_epoch, **loader_args)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def restore_data_info(self, trained: DataInfo) -> None:
        """Read data as the restored model's training data was read (see :class:`seqpipe.contracts.RestorableData`)."""
        self.trained_info = trained

    def _loader(self, split: str) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def check_options(positive: dict[str, int | None] | None = None, fractions: dict[str, float] | None = None) -> None:
    """Refuse, naming the option ``data.<name>``, a value of ``positive`` below 1 (None: not set) and one of
    ``fractions`` outside (0, 1)."""
    for name, value in (positive or {}).items():
        if value is not None and value < 1:
            raise ConfigError(f"data.{name} must be a positive integer, got {value}")
    for name, value in (fractions or {}).items():
        if not 0 < value < 1:
            raise ConfigError(f"data.{name} must be between 0 and 1 (exclusive), got {value}")


def check_shift_augment(shift_augment: int) -> None:
    """Refuse a negative ``data.shift_augment`` (bases a training sequence or window moves either way; 0: off)."""
    if shift_augment < 0:
        raise ConfigError(f"data.shift_augment must be 0 (off) or a positive number of bases, got {shift_augment}")


def untrained_predict_error(from_checkpoint: str) -> ConfigError:
    """The error of ``predict`` on a data module that has no trained model's ``data_info``;
    ``from_checkpoint``: what the checkpoint supplies."""
    return ConfigError(f"predict needs a trained model: pass --ckpt_path ({from_checkpoint}; from Python, call "
                       "datamodule.restore_data_info(model.data_info) first)")


def stratified_holdout(labels: Sequence | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """labels (n,) -> sorted indices of a held-out ``fraction`` of each class, drawn with ``seed``.

    Every class with two or more members gives at least one and keeps at least one.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held_out.append(members[:count])
    return np.sort(np.concatenate(held_out))
