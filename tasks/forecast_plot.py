"""A picture of the forecast: recent history, the forecast and its intervals, one panel per variable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from seqpipe.errors import ConfigError
from seqpipe.outputs import Output, run_directory
from seqpipe.prediction import PredictionWriter
from seqpipe.tasks.forecasting import batch_times


class ForecastPlot(Callback):
    """At ``predict``, draws the last forecast window as a PNG next to the prediction CSV
    (``predictions.csv`` -> ``predictions.png``), or at ``path``; written as ``<path>.partial`` and renamed
    when drawn (an existing PNG is replaced only when seqpipe drew it, see :mod:`seqpipe.outputs`).

    Each target variable gets a panel: the input history in the data's units, the point forecast, and
    shaded bands between symmetric pairs of quantile columns (q0.1–q0.9, ...). It reads the head's
    prediction rows, so it draws every head the same way.

    Args:
        path: the PNG to write (default: beside the prediction CSV).
        max_variables: panels drawn at most (the first targets).
    """

    def __init__(self, path: str | None = None, max_variables: int = 8):
        self.path, self.max_variables = path, max_variables
        self._history: tuple[np.ndarray, np.ndarray] | None = None
        self._rows: pd.DataFrame | None = None
        self._output: Output | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Claim the PNG before any prediction is made: a user's file at the path stops the run here."""
        self._output = None
        if stage == "predict":
            self._output = Output(Path(self.path) if self.path else self._beside_csv(trainer), "forecast plot")
            self._output.claim()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._history, self._rows = None, None

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        series = pl_module.data_info.series
        index = list(series.target_index)
        scaled = batch["x"][-1].detach().float().cpu().numpy()[:, index]
        history = scaled * np.asarray(series.std)[index] + np.asarray(series.mean)[index]
        self._history = (batch_times(batch, "time")[-1], history)
        per_window = len(series.targets) * series.pred_len
        self._rows = outputs.iloc[-per_window:]

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._rows is None or self._output is None:
            return
        self.draw(self._output.partial, pl_module.data_info.series.targets)
        self._output.commit()
        rank_zero_info(f"forecast plot written to {self._output.path}")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._output is not None:
            self._output.discard()

    def draw(self, target: Path, variables: list[str]) -> None:
        """Draw the panels into the PNG file ``target`` (any name: the format is fixed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        times, history = self._history
        shown = variables[: self.max_variables]
        figure, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown)), sharex=True, squeeze=False)
        levels = sorted(float(c[1:]) for c in self._rows.columns if c.startswith("q"))
        pairs = [(lo, hi) for lo in levels for hi in levels if lo < 0.5 < hi and abs(lo + hi - 1) < 1e-9]
        for k, (axis, name) in enumerate(zip(axes[:, 0], shown)):
            rows = self._rows[self._rows["variable"] == name]
            axis.plot(times, history[:, k], color="black", linewidth=1, label="history")
            axis.plot(rows["timestamp"], rows["forecast"], color="tab:blue", linewidth=1.2, label="forecast")
            for lo, hi in pairs:
                axis.fill_between(rows["timestamp"], rows[f"q{lo:g}"], rows[f"q{hi:g}"], color="tab:blue",
                                  alpha=0.15, linewidth=0, label=f"{hi - lo:.0%} interval")
            axis.set_ylabel(name)
        axes[0, 0].legend(loc="upper left", fontsize="small")
        figure.tight_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=100, format="png")
        plt.close(figure)

    @staticmethod
    def _beside_csv(trainer) -> Path:
        for callback in trainer.callbacks:
            csv = callback.target_for(trainer) if isinstance(callback, PredictionWriter) else None
            if csv is not None and csv.suffix.lower() == ".png":  # the plot and the CSV would be one file
                raise ConfigError(f"--prediction.path {csv}: a forecast's plot is written beside the predictions as "
                                  f".png; give the predictions another name (e.g. {csv.with_suffix('.csv')})")
            if csv is not None:
                return csv.with_suffix(".png")
        return run_directory(trainer) / "predictions.png"
