"""Writing predictions to disk as they are made."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from seqpipe.errors import ConfigError
from seqpipe.outputs import Output, run_directory


class PredictionWriter(BasePredictionWriter):
    """Streams the head's prediction rows (a DataFrame per batch) to a CSV file.

    Rows whose ``id`` column is empty (a head's default rows without the batch's ``ids``) are numbered by their
    row in the run (0, 1, ...; counted across batches).
    Rows go to ``<path>.partial`` batch by batch, and the file is renamed to ``path`` only when the whole
    prediction run has finished, so a failed run leaves no half-written output. An existing ``path`` is
    replaced only when it is a predictions CSV seqpipe wrote (see :mod:`seqpipe.outputs`).

    Args:
        path: the CSV to write (TAB-separated when it ends in ``.tsv``); by default ``predictions.csv`` inside the
            run directory. When another prediction writer is among the trainer's callbacks
            (``GenomePredictionWriter`` stores per-base scores in zarr, where a CSV would have a row per base), no
            CSV is written unless ``path`` is given.
    """

    def __init__(self, path: str | None = None):
        super().__init__(write_interval="batch")
        if path is not None and Path(path).is_dir():
            # checked here, before the model and the data load, not after every prediction was computed
            raise ConfigError(f"--prediction.path {path}: is a directory; give a file name such as {Path(path) / 'predictions.csv'}")
        self.path = path
        self._output: Output | None = None
        self._rows = 0

    def target_for(self, trainer) -> Path | None:
        """The CSV a prediction run of ``trainer`` writes, or None when another prediction writer replaces it."""
        others = [c for c in trainer.callbacks if isinstance(c, BasePredictionWriter) and c is not self]
        if others and self.path is None:
            return None
        return Path(self.path) if self.path else run_directory(trainer) / "predictions.csv"

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Claim the output before any prediction is made: a user's file at the path stops the run here."""
        self._output, self._rows = None, 0
        if stage != "predict":
            return
        target = self.target_for(trainer)
        if target is None:
            others = [type(c).__name__ for c in trainer.callbacks if isinstance(c, BasePredictionWriter) and c is not self]
            rank_zero_info(f"no predictions CSV: {', '.join(others)} writes the predictions (--prediction.path writes one too)")
            return
        self._output = Output(target, "predictions CSV")
        self._output.claim()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        if not isinstance(prediction, pd.DataFrame):
            raise TypeError(f"PredictionWriter expects the head's predictions as a DataFrame, got {type(prediction).__name__}")
        if self._output is None:
            return
        if "id" in prediction and prediction["id"].isna().all():
            prediction = prediction.assign(id=range(self._rows, self._rows + len(prediction)))
        self._rows += len(prediction)
        partial = self._output.partial
        separator = "\t" if self._output.path.suffix.lower() == ".tsv" else ","
        prediction.to_csv(partial, mode="a", header=not partial.exists(), index=False, sep=separator)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._output is not None and self._output.partial.exists():
            self._output.commit()
            rank_zero_info(f"predictions written to {self._output.path}")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._output is not None:
            self._output.discard()
