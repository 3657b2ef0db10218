"""Forecasting data: sliding windows over a CSV or zarr series, on the literature's protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from seqpipe.contracts import ChannelInput, DataInfo, SeriesInfo
from seqpipe.data.base import SplitDataModule, check_options, untrained_predict_error
from seqpipe.data.tabular_series import FillPolicy, IrregularPolicy, Series, check_fill, check_irregular, read_series
from seqpipe.errors import ConfigError, DataError
from lightning.pytorch.utilities import rank_zero_warn

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Calendar features (scaled to [-0.5, 0.5], as in Time-Series-Library's ``timeF``), and the longest step at
# which each still varies within a period.
_CALENDAR = {
    "minute": (lambda t: t.minute / 59.0 - 0.5, pd.Timedelta("1h")),
    "hour": (lambda t: t.hour / 23.0 - 0.5, pd.Timedelta("1D")),
    "day_of_week": (lambda t: t.dayofweek / 6.0 - 0.5, pd.Timedelta("7D")),
    "day_of_month": (lambda t: (t.day - 1) / 30.0 - 0.5, pd.Timedelta("31D")),
    "day_of_year": (lambda t: (t.dayofyear - 1) / 365.0 - 0.5, pd.Timedelta("366D")),
    "month": (lambda t: (t.month - 1) / 11.0 - 0.5, pd.Timedelta("366D")),
}


def calendar_names(step: pd.Timedelta) -> list[str]:
    """The calendar features that vary at a series step: minute for sub-hourly data, hour for sub-daily, ..."""
    return [name for name, (_, period) in _CALENDAR.items() if step < period]


def calendar_features(times: pd.DatetimeIndex, names: Sequence[str]) -> np.ndarray:
    """times (T,) -> float32 (T, len(names))."""
    return np.stack([np.asarray(_CALENDAR[name][0](times), dtype=np.float32) for name in names], axis=1)


def split_bounds(n_rows: int, split: Sequence[float]) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of train, val, test from row counts (``[8640, 2880, 2880]``) or fractions.

    Whole numbers summing to more than 1 are counts (a split may have none). Fractions follow
    Time-Series-Library: train = int(T·f0), test = int(T·f2), validation the rest when the fractions sum to 1
    (else int(T·f1)).
    """
    if len(split) != 3 or any(part < 0 for part in split):
        raise ConfigError(f"data.split must be three non-negative numbers (train, val, test), got {list(split)}")
    if all(float(part).is_integer() for part in split) and sum(split) > 1:
        counts = [int(part) for part in split]
    elif sum(split) <= 1 + 1e-9:
        train, test = int(n_rows * split[0]), int(n_rows * split[2])
        val = n_rows - train - test if abs(sum(split) - 1) < 1e-9 else int(n_rows * split[1])
        counts = [train, val, test]
    else:
        raise ConfigError(f"data.split {list(split)}: give row counts (whole numbers) or fractions summing to at most 1")
    if sum(counts) > n_rows:
        raise ConfigError(f"data.split {list(split)} asks for {sum(counts)} rows, but the series has {n_rows}")
    starts = np.cumsum([0] + counts[:-1])
    return [(int(start), int(start) + count) for start, count in zip(starts, counts)]


class ForecastWindows(Dataset):
    """Windows of ``seq_len`` input rows and the ``pred_len`` rows after them, from rows ``[start, stop)``.

    Items: ``x`` (seq_len, C) scaled inputs; ``y`` (pred_len, C_target) scaled targets (when the window's
    future is in the data); ``time`` (seq_len,) and ``future_time`` (pred_len,) int64 (nanoseconds since
    the epoch, or row numbers); ``timestamped``: True for nanoseconds, False for row numbers (the series'
    own, not the checkpoint's: a model fitted on timestamps may forecast numbered rows);
    ``x_calendar`` (seq_len, K) when calendar features are on; ``utc_offset`` (seconds) when the timestamps
    carry one (UTC, 0, when it changes within the file), so forecasts are written in it.
    """

    def __init__(self, series: Series, start: int, stop: int, info: SeriesInfo, stride: int = 1, with_target: bool = True):
        self.series, self.start, self.info, self.with_target = series, start, info, with_target
        self.window = info.seq_len + (info.pred_len if with_target else 0)
        self.stride = stride
        self.count = (stop - start - self.window) // stride + 1
        self.mean = np.asarray(info.mean, dtype=np.float64)
        self.std = np.asarray(info.std, dtype=np.float64)
        self.target_index = list(info.target_index)
        times = series.times
        self.utc_offset = None if times is None or times.tz is None else int(times[0].utcoffset().total_seconds())

    def __len__(self) -> int:
        return max(0, self.count)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        seq_len, pred_len = self.info.seq_len, self.info.pred_len
        first = self.start + index * self.stride
        # scaled in float64, then float32: a column of 1e8 +- 3 would lose its variation in float32 first
        rows = ((self.series.read(first, first + self.window) - self.mean) / self.std).astype(np.float32)
        item = {"x": torch.from_numpy(rows[:seq_len])}
        if self.with_target:
            item["y"] = torch.from_numpy(np.ascontiguousarray(rows[seq_len:, self.target_index]))
        past, future = self._times(first, first + seq_len, pred_len)
        item["time"], item["future_time"] = torch.from_numpy(past), torch.from_numpy(future)
        item["timestamped"] = torch.tensor(self.series.times is not None)
        if self.utc_offset is not None:
            item["utc_offset"] = torch.tensor(self.utc_offset)
        if self.info.calendar:
            item["x_calendar"] = torch.from_numpy(calendar_features(self.series.times[first : first + seq_len], self.info.calendar))
        return item

    def _times(self, first: int, end: int, pred_len: int) -> tuple[np.ndarray, np.ndarray]:
        times = self.series.times
        if end + pred_len <= len(self.series):
            if times is None:
                return np.arange(first, end), np.arange(end, end + pred_len)
            return times[first:end].asi8.copy(), times[end : end + pred_len].asi8.copy()
        future = self.series.future_times(pred_len)  # the window ends at the last row: forecast the unknown future
        if times is None:
            return np.arange(first, end), np.asarray(future, dtype=np.int64)
        return times[first:end].asi8.copy(), future.asi8.copy()


def _name_list(names: list[str] | str | None) -> list[str] | None:
    """Column names as given: one name (``--data.targets OT``) as a list of it, a list or None as it is."""
    return [names] if isinstance(names, str) else names


class ForecastData(SplitDataModule):
    """A multivariate series from a CSV file or a zarr store, cut into forecasting windows.

    The protocol is Time-Series-Library's: the rows are split in time order into train, val and test; the
    validation and test windows start ``seq_len`` rows before their split, so every row of the split is
    forecast; a StandardScaler is fit on the training rows only; windows slide by ``stride`` rows. The
    scaler, column names, targets, lengths and frequency are saved in the checkpoint (``data_info``), and
    ``test``/``predict`` with ``--ckpt_path`` reuse them.

    ``predict`` forecasts the future: the last ``seq_len`` rows of ``path`` in, the ``pred_len`` steps after
    the last row out, their timestamps continuing the series' inferred frequency.

    Args:
        path: a CSV file or a zarr store (see :mod:`seqpipe.data.tabular_series` for the layouts).
        split: train/val/test row counts (``[8640, 2880, 2880]``) or fractions (``[0.7, 0.1, 0.2]``).
        seq_len: input rows per window. At ``predict``/``test`` with a checkpoint, its value is used.
        pred_len: rows to forecast. At ``predict``/``test`` with a checkpoint, its value is used.
        stride: rows between consecutive training windows (validation and test windows use every row).
        time_column: the timestamp column; detected when unset (see :func:`read_series`); "none": no time
            column, the rows are steps (``predict`` writes step numbers).
        date_format: the timestamps' ``strptime`` format, e.g. ``"%d/%m/%Y %H:%M"`` for day-first dates
            (default: inferred). Timestamps with a UTC offset are forecast in it, or in UTC where it changes.
        columns: the input variables (default: every column but time); one name or a list.
        targets: the variables to forecast (default: all inputs; one name for univariate targets, with
            several inputs for many-to-one). Targets are always among the inputs.
        scale: standardise every variable with the training rows' mean and standard deviation.
        calendar: add calendar features (hour, day of week, ...) of the input rows.
        fill: missing values: None (an error naming them), "ffill" or "interpolate". Infinite values are
            always an error.
        irregular: duplicated timestamps and gaps: "error" (naming the first) or "resample" (average rows
            sharing a timestamp, insert the missing steps and fill them with ``fill``; one line counts both).
        max_in_memory_mb: zarr stores above this size are read window by window from disk.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        path: str | None = None,
        split: list[float] = [0.7, 0.1, 0.2],
        seq_len: int = 96,
        pred_len: int = 96,
        stride: int = 1,
        time_column: str | None = None,
        date_format: str | None = None,
        columns: list[str] | str | None = None,
        targets: list[str] | str | None = None,
        scale: bool = True,
        calendar: bool = False,
        fill: FillPolicy | None = None,
        irregular: IrregularPolicy = "error",
        max_in_memory_mb: float = 512.0,
        batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__()
        check_fill(fill)
        check_irregular(irregular)
        check_options({"seq_len": seq_len, "pred_len": pred_len, "stride": stride, "batch_size": batch_size})
        self.path, self.split, self.stride = path, list(split), stride
        self.seq_len, self.pred_len = seq_len, pred_len
        self.time_column, self.date_format = time_column, date_format
        self.columns, self.targets = _name_list(columns), _name_list(targets)
        self.scale, self.calendar, self.fill, self.max_in_memory_mb = scale, calendar, fill, max_in_memory_mb
        self.irregular = irregular
        self.batch_size, self.num_workers = batch_size, num_workers
        self.series: Series | None = None
        self.datasets: dict[str, ForecastWindows] = {}

    def setup(self, stage: Literal["fit", "validate", "test", "predict"]) -> None:
        """Read and check the series, fit (or restore) the scaler, build the windows the stage needs."""
        if self.path is None:
            raise ConfigError("data.path is not set: give the CSV file or zarr store of the series")
        saved = self.trained_info
        if saved is not None and saved.series is None:
            raise ConfigError("the checkpoint's model was not trained on a series (ForecastData): give a forecasting checkpoint")
        columns = saved.series.columns if saved else self._input_columns()
        columns_hint = f"the model was trained on {columns}; the file must have them" if saved else "set data.columns"
        self.series = read_series(
            self.path, time_column=self.time_column, columns=columns, fill=self.fill, irregular=self.irregular,
            max_in_memory_mb=self.max_in_memory_mb, date_format=self.date_format, columns_hint=columns_hint,
        )
        if saved and saved.series.calendar and self.series.times is None:
            raise DataError(self.path, f"no timestamps, which the model's calendar features "
                            f"({', '.join(saved.series.calendar)}) need; give the time column (data.time_column)")
        trained_freq = saved.series.freq if saved else None
        if trained_freq and self.series.freq and not math.isclose(mean_step(trained_freq), mean_step(self.series.freq),
                                                                   rel_tol=0.01):
            raise DataError(self.path, f"its time step is {self.series.freq!r}, but the model was trained on steps of "
                                       f"{trained_freq!r}: it would forecast steps it never learned (resample the rows "
                                       "to the model's step, or train a model on this one)")
        if saved and self.series.unused_columns:
            rank_zero_warn(f"{self.path}: column(s) {self.series.unused_columns} are ignored: the model was trained on {columns}")
        if stage == "predict":
            if saved is None:
                raise untrained_predict_error("its scaler and lengths are used")
            self.data_info = saved
            self._check_length(len(self.series), saved.series.seq_len, 0, "the series")
            start = len(self.series) - saved.series.seq_len
            self.datasets["predict"] = ForecastWindows(self.series, start, len(self.series), saved.series, with_target=False)
            return
        bounds = split_bounds(len(self.series), self.split)
        self.data_info = saved or self._fit_data_info(bounds[0][1])
        if saved is not None and stage == "test":
            self._check_test_rows_were_not_trained_on(bounds[2])
        info = self.data_info.series
        seq_len = info.seq_len
        for name, (start, stop) in zip(SPLITS, bounds):
            if (name == "train" and stage == "fit") or (name == "val" and stage in ("fit", "validate")) or (name == "test" and stage == "test"):
                if stop == start:
                    raise ConfigError(f"data.split {self.split} leaves the {name} split empty (0 rows): give it rows")
                first = start if name == "train" else max(0, start - seq_len)
                self._check_length(stop - first, seq_len, info.pred_len, f"the {name} split (rows {first}-{stop})")
                stride = self.stride if name == "train" else 1
                self.datasets[name] = ForecastWindows(self.series, first, stop, info, stride=stride)

    def _input_columns(self) -> list[str] | None:
        """Inputs in order: the chosen columns, then any target not among them."""
        if self.columns is None:
            return None
        return list(self.columns) + [t for t in (self.targets or []) if t not in self.columns]

    def _fit_data_info(self, train_rows: int) -> DataInfo:
        """What the model learns from the training rows: scaler, names, lengths, frequency, calendar."""
        series = self.series
        targets = list(self.targets or series.columns)
        unknown = [t for t in targets if t not in series.columns]
        if unknown:
            raise ConfigError(f"data.targets {unknown} are not columns of {self.path}; the columns are {series.columns}")
        if self.scale:
            mean, std = training_moments(series, train_rows)
        else:
            mean, std = np.zeros(len(series.columns)), np.ones(len(series.columns))
        calendar: list[str] = []
        if self.calendar:
            if series.times is None:
                raise ConfigError(f"data.calendar needs timestamps, and {self.path} has no time column")
            calendar = calendar_names(pd.Timedelta(series.times[1] - series.times[0]))
        fitted = SeriesInfo(
            columns=list(series.columns), targets=targets, target_index=[series.columns.index(t) for t in targets],
            mean=[float(m) for m in mean], std=[float(s) for s in std], seq_len=self.seq_len, pred_len=self.pred_len,
            freq=series.freq, calendar=calendar,
        )
        trained_on = {"trained_on": {"path": str(Path(self.path).resolve()), "rows": int(train_rows)}}
        return DataInfo(ChannelInput(len(series.columns) + len(calendar)), series=fitted, extra=trained_on)

    def _check_test_rows_were_not_trained_on(self, test: tuple[int, int]) -> None:
        """Warn when the test split of this file reaches into the rows the checkpoint's model was trained on (the
        same file, split otherwise than at fit): its metrics would flatter the model."""
        trained_on = self.trained_info.extra.get("trained_on") or {}
        if trained_on.get("path") == str(Path(self.path).resolve()) and test[0] < trained_on.get("rows", 0):
            rank_zero_warn(f"data.split {self.split} puts test rows {test[0]}-{test[1]} of {self.path} among its first "
                           f"{trained_on['rows']} rows, which the model was trained on: the test metrics flatter it "
                           "(give the split of the fit)")

    def _check_length(self, rows: int, seq_len: int, pred_len: int, what: str) -> None:
        """A window is ``seq_len`` input rows and, where the future is known (not at predict), ``pred_len`` more."""
        needed = seq_len + pred_len
        terms = f"seq_len {seq_len} + pred_len {pred_len}" if pred_len else f"seq_len {seq_len}; predict needs no future rows"
        if rows < needed:
            raise DataError(self.path, f"{what} has {rows} rows, fewer than the {needed} a window needs ({terms})")

    def _loader(self, split: str) -> DataLoader:
        return self.split_loader(split, self.datasets[split], batch_size=self.batch_size, shuffle=split == "train",
                                 num_workers=self.num_workers)


def mean_step(freq: str) -> float:
    """The mean step of a pandas frequency in seconds, over 104 steps: the same for anchors that differ (weeks from
    Sunday or Monday, month starts or ends), not for other steps (business days against days)."""
    times = pd.date_range("2001-01-01", periods=105, freq=freq)
    return (times[-1] - times[0]).total_seconds() / 104


def training_moments(series: Series, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population standard deviation (as sklearn's StandardScaler) of rows
    ``[0, stop)``, read block by block in float64. A constant column (std within rounding of its mean) gets std 1 so
    it scales to zeros; a column of small values keeps its own (values of 1e-12 vary by 1e-13)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below
        mean = sum(block.sum(0) for _, block in series.blocks(stop)) / stop
        # a second pass around the mean: sums of squares of raw values lose the variance of large-offset columns
        std = np.sqrt(sum(np.square(block - mean).sum(0) for _, block in series.blocks(stop)) / stop)
    overflow = [name for name, m, s in zip(series.columns, mean, std) if not (np.isfinite(m) and np.isfinite(s))]
    if overflow:
        raise DataError(series.path, f"column(s) {overflow} hold values too large for their mean and standard deviation "
                                     "(float64 overflows): rescale them")
    return mean, np.where(std > 1e-12 * np.abs(mean), std, 1.0)
