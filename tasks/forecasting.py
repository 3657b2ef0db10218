"""Multivariate forecasting: the next ``pred_len`` rows of every target variable from ``seq_len`` rows.

One head serves point and probabilistic forecasts: what the output means, how it is scored and how it
becomes quantiles is the business of its ``loss`` (:mod:`seqpipe.tasks.forecast_losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

from seqpipe.contracts import ChannelInput, DataInfo, InputSpec, SeriesInfo
from seqpipe.errors import ConfigError, first_few
from seqpipe.heads import TaskHead
from seqpipe.tasks.forecast_losses import ForecastLoss, PointForecast

_EPS = 1e-5


@dataclass
class InputWindow:
    """What :meth:`Forecasting.forward` needs of the input step: the window (B, L, C) as the backbone saw it
    (RevIN-normalised when ``revin``), and the per-variable statistics (B, C) that undo the normalisation."""

    window: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


class Forecasting(TaskHead):
    """Forecast head with channel-independent or channel-mixing backbones, RevIN and a linear skip.

    The backbone's features are mapped linearly to ``pred_len × n_params`` outputs per forecast variable.

    Args:
        loss: the output's meaning and training loss: :class:`~seqpipe.tasks.forecast_losses.PointForecast`
            (the default, MSE; ``criterion: l1`` or ``huber`` for robust training), ``QuantileForecast``
            (pinball loss) or ``StudentTForecast`` (likelihood).
        channel_independent: True: one backbone shared by all variables, each fed alone as a univariate
            series — inputs (B, L, C) become (B·C, L, 1) (plus the calendar features), as in PatchTST.
            False: channel mixing — the backbone sees all C variables at each step and the readout
            forecasts every target from the joint features.
        revin: reversible instance normalisation (Kim et al. 2022): each window is standardised by its own
            mean and std per variable before the backbone, and the forecast is moved back after; this is
            what copes with the level shifts between training and test years.
        linear_skip: add a linear map from the (normalised) input window to the forecast, shared over
            variables (DLinear/NLinear's forecaster), so the SSM learns the residual of a linear forecast.
        readout: "flatten": all ``seq_len`` feature positions, flattened (PatchTST's head; the backbone must
            keep one position per input row); "last": the last position only (any causal backbone, also
            one with a patch front end that shortens the sequence, ``backbone.frontend: patch``).
        dropout: dropout on the features before the readout.

    Metrics over the whole epoch: ``mse``, ``mae`` on the scaled data (as papers report), ``mse_orig``,
    ``mae_orig`` in the data's units; for probabilistic losses also ``crps`` (scaled) and ``coverage`` of the
    interval between the lowest and highest quantile. The best checkpoint has the lowest ``val/loss``.
    """

    task = "a forecasting model"

    def __init__(
        self,
        loss: ForecastLoss | None = None,
        channel_independent: bool = True,
        revin: bool = True,
        linear_skip: bool = True,
        readout: Literal["flatten", "last"] = "flatten",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.readout_positions = readout
        self.distribution = loss if loss is not None else PointForecast()
        self.channel_independent, self.revin, self.linear_skip = channel_independent, revin, linear_skip
        self.dropout = nn.Dropout(dropout)
        self.readout: nn.Linear | None = None
        self.skip: nn.Linear | None = None

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        series = _series(data_info)
        self.seq_len, self.pred_len = int(series.seq_len), int(series.pred_len)
        self.n_inputs = len(series.columns)
        self.target_index = list(series.target_index)
        # the targets' scaler in float64 on the CPU, as the data module scales (a column of 1e8 +- 3 keeps its variation
        # back in the data's units; MPS has no float64), and its std on the model's device for the metrics' errors
        self.target_mean = np.asarray(series.mean, dtype=np.float64)[self.target_index]
        self.target_std = np.asarray(series.std, dtype=np.float64)[self.target_index]
        self.register_buffer("scaler_std", torch.tensor(self.target_std, dtype=torch.float32), persistent=False)
        others = [name for name in series.columns if name not in series.targets]
        if self.channel_independent and others:
            rank_zero_warn(f"Forecasting: channel_independent forecasts each target from its own history, so the other "
                           f"input column(s) {first_few(others, 5)} cannot change the forecast: set "
                           "--model.head.channel_independent false to use them, or leave them out with --data.columns")
        forecasts = 1 if self.channel_independent else len(self.target_index)
        positions = self.seq_len if self.readout_positions == "flatten" else 1
        self.readout = nn.Linear(positions * d_model, self.pred_len * forecasts * self.distribution.n_params)
        if self.linear_skip:
            self.skip = nn.Linear(self.seq_len, self.pred_len)

    def backbone_input_spec(self, data_info: DataInfo) -> InputSpec:
        """Channel-independent: one variable and the K calendar features per row; mixing: the data's C + K."""
        return ChannelInput(1 + len(_series(data_info).calendar)) if self.channel_independent else data_info.input

    def backbone_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, InputWindow]:
        """x (B, L, C) -> (B·C, L, 1 + K) channel-independent or (B, L, C + K) mixing (K calendar features), and
        the :class:`InputWindow` (normalised window, RevIN statistics) that :meth:`forward` needs."""
        x = batch["x"]
        if self.revin:
            mean = x.mean(1).detach()
            std = torch.sqrt(x.var(1, unbiased=False) + _EPS).detach()
            x = (x - mean[:, None]) / std[:, None]
        else:
            mean, std = torch.zeros_like(x[:, 0]), torch.ones_like(x[:, 0])
        context = InputWindow(x, mean, std)
        calendar = batch.get("x_calendar")
        if self.channel_independent:
            batch_size, length, channels = x.shape
            x = x.transpose(1, 2).reshape(batch_size * channels, length, 1)
            if calendar is not None:
                calendar = calendar.repeat_interleave(channels, dim=0)
        return (x if calendar is None else torch.cat([x, calendar.to(x.dtype)], dim=-1)), context

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any],
                context: InputWindow) -> torch.Tensor:
        """features (B·C or B, L, d_model) and the :class:`InputWindow` of :meth:`backbone_input` -> distribution
        parameters (B, pred_len, C_target, n_params), on the data module's scale."""
        window, mean, std = context.window, context.mean, context.std
        batch_size, n_params = window.shape[0], self.distribution.n_params
        if self.readout_positions == "last":
            features = features[:, -1:]
        elif features.shape[1] != self.seq_len:
            raise ConfigError(f"readout 'flatten' needs one feature per input row ({self.seq_len}), got {features.shape[1]}: "
                             "use readout 'last' with a shortening front end")
        raw = self.readout(self.dropout(features).flatten(1))
        if self.channel_independent:
            raw = raw.view(batch_size, self.n_inputs, self.pred_len, n_params).transpose(1, 2)[:, :, self.target_index]
        else:
            raw = raw.view(batch_size, self.pred_len, len(self.target_index), n_params)
        params = self.distribution.from_raw(raw)
        if self.skip is not None:
            linear = self.skip(window[..., self.target_index].transpose(1, 2)).transpose(1, 2)
            params = self.distribution.rescale(params, linear, torch.ones_like(linear))
        if self.revin:
            mean, std = mean[:, None, self.target_index], std[:, None, self.target_index]
            params = self.distribution.rescale(params, mean.expand(-1, self.pred_len, -1), std.expand(-1, self.pred_len, -1))
        return params

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.distribution(outputs, batch["y"])

    def metrics(self) -> MetricCollection:
        metrics = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "mse_orig": MeanSquaredError(), "mae_orig": MeanAbsoluteError()}
        if self.distribution.probabilistic:
            metrics |= {"crps": MeanMetric(), "coverage": MeanMetric()}
        return MetricCollection(metrics)

    def to_original(self, values: torch.Tensor) -> np.ndarray:
        """Scaled values (..., C_target) -> the data's units, float64 on the CPU."""
        return values.detach().cpu().double().numpy() * self.target_std + self.target_mean

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        outputs, target = outputs.detach().float(), batch["y"].float()
        point = self.distribution.to_prediction(outputs)
        metrics["mse"].update(point, target)
        metrics["mae"].update(point, target)
        # errors in the data's units are the scaled errors times std (the mean cancels: no large offset in float32)
        metrics["mse_orig"].update(point * self.scaler_std, target * self.scaler_std)
        metrics["mae_orig"].update(point * self.scaler_std, target * self.scaler_std)
        if self.distribution.probabilistic:
            metrics["crps"].update(self.distribution.crps(outputs, target))
            metrics["coverage"].update(self.distribution.covered(outputs, target))

    def predictions(self, outputs: torch.Tensor, batch: dict[str, Any], data_info: DataInfo) -> pd.DataFrame:
        """One row per window, future step and target: ``timestamp``, ``variable``, ``forecast`` and a
        ``q<level>`` column per quantile, all in the data's units (long format, ready for plotting)."""
        outputs = outputs.detach().float()
        columns = {"forecast": self.to_original(self.distribution.to_prediction(outputs))}
        if self.distribution.probabilistic:
            quantiles = self.distribution.to_quantiles(outputs)
            for k, level in enumerate(self.distribution.quantiles):
                columns[f"q{level:g}"] = self.to_original(quantiles[..., k])
        series = _series(data_info)
        batch_size, targets = outputs.shape[0], list(series.targets)
        timestamps = batch_times(batch, "future_time")
        frame = pd.DataFrame({
            "timestamp": np.repeat(timestamps.reshape(batch_size, self.pred_len), len(targets), axis=1).ravel(),
            "variable": np.tile(targets, batch_size * self.pred_len),
        })
        for name, values in columns.items():
            frame[name] = values.ravel()
        return frame


def batch_times(batch: dict[str, Any], key: str) -> np.ndarray:
    """``batch[key]`` (``time`` or ``future_time``) as datetime64 values, as timestamps in the series' UTC offset
    when it has one, or as step numbers when the series read has no timestamps (whatever the checkpoint was fitted on)."""
    values = batch[key].cpu().numpy()
    if not batch["timestamped"].all():
        return values
    if "utc_offset" not in batch:
        return pd.to_datetime(values.ravel()).to_numpy().reshape(values.shape)
    zone = timezone(timedelta(seconds=int(batch["utc_offset"][0])))
    return pd.to_datetime(values.ravel(), utc=True).tz_convert(zone).to_numpy(dtype=object).reshape(values.shape)


def _series(data_info: DataInfo) -> SeriesInfo:
    if data_info.series is None:
        raise ConfigError("the Forecasting head needs a series (seqpipe.data.timeseries.ForecastData); this data has none")
    return data_info.series
