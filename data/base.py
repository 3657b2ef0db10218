"""What every seqpipe data module shares: one loader per split, and the fitted state of a restored model."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader


class SplitDataModule(L.LightningDataModule):
    """A data module whose four Lightning loader hooks all go through ``_loader(split)``.

    ``split`` is "train", "val", "test" or "predict"; subclasses shuffle and augment for "train" only.
    """

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

    def checkpoint_data_info(self) -> dict[str, Any] | None:
        """The ``data_info`` of the model the trainer runs, when it has one (a model restored from a
        checkpoint): the labels, scalers and vocabulary fitted on the training data."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        info = model.hparams.get("data_info") if model is not None else None
        return dict(info) if info else None
