"""Forecasting data: splits, windows and scaler against hand computations; CSV vs zarr; every bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqpipe.data.synthetic import make_sine_series, sine_series
from seqpipe.data.tabular_series import read_series
from seqpipe.data.timeseries import ForecastData, calendar_names, split_bounds
from seqpipe.errors import ConfigError, DataError
from seqpipe.tasks.forecasting import Forecasting

SEQ, PRED = 24, 12


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    return make_sine_series(tmp_path_factory.mktemp("series"), seed=7, rows=400, n_columns=3)


def module(path, stage="fit", **options) -> ForecastData:
    data = ForecastData(path=str(path), split=options.pop("split", [240, 80, 80]), seq_len=SEQ, pred_len=PRED, batch_size=16, **options)
    data.setup(stage)
    return data


def test_split_bounds_counts_and_fractions():
    assert split_bounds(100, [60, 20, 20]) == [(0, 60), (60, 80), (80, 100)]
    assert split_bounds(17420, [8640, 2880, 2880]) == [(0, 8640), (8640, 11520), (11520, 14400)]
    # Time-Series-Library: train int(0.7 T), test int(0.2 T), validation the rest
    assert split_bounds(101, [0.7, 0.1, 0.2]) == [(0, 70), (70, 81), (81, 101)]
    with pytest.raises(ConfigError, match="asks for 120 rows"):
        split_bounds(100, [60, 30, 30])


def test_scaler_and_windows_match_a_hand_computation(series_dir):
    data = module(series_dir / "series.csv")
    frame = pd.read_csv(series_dir / "series.csv")
    values = frame[["v0", "v1", "v2"]].to_numpy(np.float64)
    mean, std = values[:240].mean(0), values[:240].std(0)  # population std, training rows only
    np.testing.assert_allclose(data.data_info.series.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(data.data_info.series.std, std, rtol=1e-6)
    assert isinstance(data.data_info.series.mean, list) and data.data_info.series.freq == "h"
    scaled = (values - mean) / std
    train, val = data.datasets["train"], data.datasets["val"]
    assert len(train) == 240 - SEQ - PRED + 1
    assert len(val) == 80 - PRED + 1  # starts SEQ rows early: every validation row is forecast
    for dataset, first, index in ((train, 0, 5), (val, 240 - SEQ, 0), (val, 240 - SEQ, len(val) - 1)):
        item = dataset[index]
        start = first + index
        np.testing.assert_allclose(item["x"].numpy(), scaled[start : start + SEQ], atol=1e-5)
        np.testing.assert_allclose(item["y"].numpy(), scaled[start + SEQ : start + SEQ + PRED], atol=1e-5)
        times = pd.to_datetime(frame["date"]).to_numpy()
        assert (pd.to_datetime(item["future_time"].numpy()) == times[start + SEQ : start + SEQ + PRED]).all()
    assert val[len(val) - 1]["y"].shape == (PRED, 3)
    test = module(series_dir / "series.csv", stage="test").datasets["test"]
    np.testing.assert_allclose(test[0]["x"].numpy(), scaled[320 - SEQ : 320], atol=1e-5)


def test_stride_and_targets_many_to_one(series_dir):
    data = module(series_dir / "series.csv", stride=5, columns=["v0", "v1"], targets=["v2"])
    info = data.data_info.to_dict()
    assert info["columns"] == ["v0", "v1", "v2"] and info["targets"] == ["v2"] and info["target_index"] == [2]
    assert module(series_dir / "series.csv", stride=5, columns=["v0", "v1"], targets="v2").data_info.to_dict() == info
    train = data.datasets["train"]
    assert len(train) == (240 - SEQ - PRED) // 5 + 1
    torch.testing.assert_close(train[1]["y"][:, 0], train[1]["x"].new_tensor(
        (pd.read_csv(series_dir / "series.csv")["v2"].to_numpy()[5 + SEQ : 5 + SEQ + PRED] - info["mean"][2]) / info["std"][2]))


def test_calendar_features(series_dir):
    data = module(series_dir / "series.csv", calendar=True)
    names = data.data_info.series.calendar
    assert names == calendar_names(pd.Timedelta("1h")) == ["hour", "day_of_week", "day_of_month", "day_of_year", "month"]
    item = data.datasets["train"][3]
    assert item["x_calendar"].shape == (SEQ, len(names)) and data.data_info.input.channels == 3 + len(names)
    hours = pd.date_range("2021-01-01", periods=400, freq="h")[3 : 3 + SEQ].hour.to_numpy()
    np.testing.assert_allclose(item["x_calendar"][:, 0].numpy(), hours / 23 - 0.5, atol=1e-6)


@pytest.mark.parametrize("max_in_memory_mb", [512.0, 0.0])  # loaded whole, and read window by window
def test_csv_and_zarr_give_identical_batches(series_dir, max_in_memory_mb):
    csv = module(series_dir / "series.csv")
    store = module(series_dir / "series.zarr", max_in_memory_mb=max_in_memory_mb)
    assert csv.data_info.series == store.data_info.series and csv.data_info.input == store.data_info.input
    for split in ("train", "val"):
        a = next(iter(torch.utils.data.DataLoader(csv.datasets[split], batch_size=8)))
        b = next(iter(torch.utils.data.DataLoader(store.datasets[split], batch_size=8)))
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_zarr_array_without_timestamps(tmp_path):
    import zarr

    values = sine_series(seed=3, rows=200, n_columns=2)[["v0", "v1"]].to_numpy()
    array = zarr.create_array(str(tmp_path / "plain.zarr"), shape=values.shape, dtype="float64", chunks=(64, 2))
    array[:] = values
    array.attrs["columns"] = ["a", "b"]
    series = read_series(tmp_path / "plain.zarr", max_in_memory_mb=0)
    assert series.columns == ["a", "b"] and series.times is None and series.freq is None
    np.testing.assert_allclose(series.read(10, 20), values[10:20].astype(np.float32))
    assert list(series.future_times(3)) == [200, 201, 202]


def test_predict_window_is_the_last_rows_and_future_follows_the_frequency(series_dir):
    trained = module(series_dir / "series.csv").data_info
    data = ForecastData(path=str(series_dir / "series.csv"))
    data.restore_data_info(trained)  # what the CLI does with --ckpt_path
    data.setup("predict")
    (item,) = list(data.datasets["predict"])
    frame = pd.read_csv(series_dir / "series.csv")
    expected = (frame[["v0", "v1", "v2"]].to_numpy()[-SEQ:] - trained.series.mean) / trained.series.std
    np.testing.assert_allclose(item["x"].numpy(), expected, atol=1e-5)
    assert "y" not in item
    last = pd.Timestamp(frame["date"].iloc[-1])
    assert list(pd.to_datetime(item["future_time"].numpy())) == list(pd.date_range(last, periods=PRED + 1, freq="h")[1:])
    # the same rows at 15-minute steps: the hourly model would forecast steps it never learned
    quarter = frame.assign(date=pd.date_range(frame["date"].iloc[0], periods=len(frame), freq="15min"))
    quarter.to_csv(series_dir / "quarter.csv", index=False)
    data = ForecastData(path=str(series_dir / "quarter.csv"))
    data.restore_data_info(trained)
    with pytest.raises(DataError, match=r"quarter.csv: its time step is '15min', but the model was trained on steps of 'h'"):
        data.setup("predict")



def test_the_time_step_check_compares_steps_not_anchors():
    from seqpipe.data.timeseries import mean_step

    assert mean_step("W-SUN") == mean_step("W-MON") and mean_step("h") == mean_step("60min")
    assert math.isclose(mean_step("MS"), mean_step("ME"), rel_tol=0.01)
    assert not math.isclose(mean_step("B"), mean_step("D"), rel_tol=0.01)


@pytest.mark.parametrize("fit_time_column, predict_time_column", [(None, "none"), ("none", None)])
def test_predict_writes_the_times_of_the_series_read(series_dir, fit_time_column, predict_time_column):
    """Step numbers for rows read without timestamps, dates for rows read with them, whatever the model was fitted on."""
    path = series_dir / "series.csv"
    trained = module(path, time_column=fit_time_column, columns=["v0", "v1", "v2"]).data_info
    data = ForecastData(path=str(path), time_column=predict_time_column)
    data.restore_data_info(trained)
    data.setup("predict")
    batch = next(iter(torch.utils.data.DataLoader(data.datasets["predict"], batch_size=1)))
    head = Forecasting()
    head.bind(8, trained)
    forecast = head.predictions(torch.zeros(1, PRED, 3, 1), batch, trained)
    if predict_time_column == "none":
        expected = list(range(400, 400 + PRED))
    else:
        expected = list(pd.date_range(pd.Timestamp("2021-01-01") + pd.Timedelta(hours=399), periods=PRED + 1, freq="h")[1:])
    assert list(forecast["timestamp"].unique()) == expected


def test_a_calendar_model_needs_timestamps(series_dir):
    trained = module(series_dir / "series.csv", calendar=True).data_info
    data = ForecastData(path=str(series_dir / "series.csv"), time_column="none")
    data.restore_data_info(trained)
    with pytest.raises(DataError, match=r"series.csv: no timestamps, which the model's calendar features \(hour, .*\) need"):
        data.setup("predict")


def write(tmp_path, frame: pd.DataFrame, name="bad.csv"):
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


@pytest.fixture
def frame():
    return sine_series(seed=11, rows=60, n_columns=2)


def test_missing_values_are_named_or_filled(tmp_path, frame, caplog):
    frame.loc[[4, 9], "v1"] = np.nan
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"2 missing values in column\(s\) \['v1'\] at row 4 \(line 6\), row 9 \(line 11\).*data.fill"):
        read_series(path)
    with caplog.at_level("INFO"):
        filled = read_series(path, fill="ffill").read(0, 60)
    assert "data.fill ffill filled 2 missing cells of 120 (v1 2)" in caplog.text
    assert filled[4, 1] == frame["v1"].iloc[3] and filled[9, 1] == frame["v1"].iloc[8]
    line = read_series(path, fill="interpolate").read(0, 60)
    np.testing.assert_allclose(line[4, 1], (frame["v1"].iloc[3] + frame["v1"].iloc[5]) / 2, rtol=1e-6)


def test_missing_values_in_a_large_zarr_store_are_named(tmp_path, frame):
    import zarr

    group = zarr.open_group(str(tmp_path / "gaps.zarr"), mode="w")
    for name in ("v0", "v1"):
        values = frame[name].to_numpy().copy()
        if name == "v0":
            values[[7, 33]] = np.nan
        group.create_array(name, shape=values.shape, dtype="float64", chunks=(16,))[:] = values
    with pytest.raises(DataError, match=r"column\(s\) \['v0'\] at row 7, row 33.*cannot repair"):
        read_series(tmp_path / "gaps.zarr", max_in_memory_mb=0, fill="ffill")


def test_non_numeric_column_names_the_row(tmp_path, frame):
    frame["v0"] = frame["v0"].astype(object)
    frame.loc[12, "v0"] = "n/a?"
    with pytest.raises(DataError, match=r"line 14: column 'v0' is not numeric: row 12 holds 'n/a\?'"):
        read_series(write(tmp_path, frame))


@pytest.mark.parametrize("problem, pattern", [
    ("unsorted", r"not sorted: .* row 20 \(line 22\) comes before .*; sort the rows by time \(data.irregular resample"),
    ("duplicate", r"bad.csv: duplicate timestamp: 2021-01-01 19:00:00 at row 20 \(line 22\) repeats the previous row's;"),
    ("irregular", r"irregular timestamps: row 20 \(line 22\) is at .* steps by 0 days 01:00:00"),
])
def test_bad_timestamps_name_the_first_offending_row(tmp_path, frame, problem, pattern):
    times = frame["date"].copy()
    if problem == "unsorted":
        times.iloc[20], times.iloc[21] = times.iloc[21], times.iloc[20]
        times.iloc[20] = times.iloc[18]
    elif problem == "duplicate":
        times.iloc[20] = times.iloc[19]
    else:
        times.iloc[20:] = times.iloc[20:] + pd.Timedelta("30min")
    frame["date"] = times
    with pytest.raises(DataError, match=pattern):
        read_series(write(tmp_path, frame))


def test_series_too_short_and_unknown_columns(tmp_path, frame):
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"the train split .* has 30 rows, fewer than the 36"):
        module(path, split=[30, 15, 15])
    with pytest.raises(DataError, match="no column 'nope'"):
        module(path, split=[40, 10, 10], columns=["nope"])
    with pytest.raises(ConfigError, match="data.fill"):
        ForecastData(path=str(path), fill="zero")


def test_window_length_error_prints_the_sum_and_both_terms(tmp_path, frame):
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"the train split \(rows 0-30\) has 30 rows, fewer than the 36 a window needs "
                                        r"\(seq_len 24 \+ pred_len 12\)"):
        module(path, split=[30, 15, 15])
    trained = module(path, split=[36, 12, 12]).data_info
    short = write(tmp_path, frame.iloc[:20], "short.csv")
    data = ForecastData(path=str(short))
    data.restore_data_info(trained)
    with pytest.raises(DataError, match=r"the series has 20 rows, fewer than the 24 a window needs \(seq_len 24; predict"):
        data.setup("predict")


def test_an_extra_column_at_predict_is_named_once(tmp_path, frame):
    trained = module(write(tmp_path, frame, "train.csv"), split=[36, 12, 12]).data_info
    frame["humidity"] = 1.0
    data = ForecastData(path=str(write(tmp_path, frame, "new.csv")))
    data.restore_data_info(trained)
    with pytest.warns(UserWarning, match=r"new.csv: column\(s\) \['humidity'\] are ignored: the model was trained on \['v0', 'v1'\]"):
        data.setup("predict")


@pytest.mark.parametrize("fill", [None, "ffill"])  # data.fill repairs missing values, never infinities
def test_non_finite_values_are_named_like_missing_ones(tmp_path, frame, fill):
    text = frame.to_csv(index=False).splitlines()
    for row, column, cell in ((3, 2, "inf"), (7, 2, "1e400"), (9, 1, "-Infinity")):
        cells = text[row + 1].split(",")
        cells[column] = cell
        text[row + 1] = ",".join(cells)
    (tmp_path / "inf.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"3 non-finite values in column\(s\) \['v0', 'v1'\] at row 3 \(line 5\), row 7 \(line 9\), "
                                        r"row 9 \(line 11\); infinite, or beyond float64; data.fill does not repair them"):
        read_series(tmp_path / "inf.csv", fill=fill)


@pytest.mark.parametrize("max_in_memory_mb", [512.0, 0.0])
def test_non_finite_values_in_zarr_are_named(tmp_path, frame, max_in_memory_mb):
    import zarr

    group = zarr.open_group(str(tmp_path / "inf.zarr"), mode="w")
    for name in ("v0", "v1"):
        values = frame[name].to_numpy().copy()
        values[[5, 40]] = np.inf if name == "v1" else values[[5, 40]]
        group.create_array(name, shape=values.shape, dtype="float64", chunks=(16,))[:] = values
    with pytest.raises(DataError, match=r"2 non-finite values in column\(s\) \['v1'\] at row 5, row 40"):
        read_series(tmp_path / "inf.zarr", max_in_memory_mb=max_in_memory_mb, fill="ffill")


@pytest.mark.parametrize("units, step, origin", [
    ("seconds since 1970-01-01 00:00:00", 3600, "1970-01-01"),
    ("hours since 2000-01-01", 1, "2000-01-01"),
    ("days since 2010-06-01 12:00:00", 1, "2010-06-01 12:00"),
])
def test_zarr_time_in_cf_units(tmp_path, frame, units, step, origin):
    import zarr

    group = zarr.open_group(str(tmp_path / "cf.zarr"), mode="w")
    offsets = (np.arange(len(frame)) + 1000) * step
    group.create_array("time", shape=offsets.shape, dtype="int64")[:] = offsets
    group["time"].attrs["units"] = units
    group.create_array("v0", shape=(len(frame),), dtype="float64")[:] = frame["v0"].to_numpy()
    series = read_series(tmp_path / "cf.zarr")
    unit = units.split()[0]
    expected = pd.Timestamp(origin) + pd.to_timedelta(offsets, unit=unit)
    assert list(series.times) == list(expected)
    assert series.freq == ("D" if unit == "days" else "h")


def test_zarr_time_without_units_is_refused(tmp_path, frame):
    import zarr

    group = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    group.create_array("time", shape=(len(frame),), dtype="int64")[:] = np.arange(len(frame)) * 3600
    group.create_array("v0", shape=(len(frame),), dtype="float64")[:] = frame["v0"].to_numpy()
    with pytest.raises(DataError, match=r"bare.zarr: time coordinate 'time' holds int64 values without CF-style units"):
        read_series(tmp_path / "bare.zarr")
    group["time"].attrs["units"] = "fortnights since 2000-01-01"
    with pytest.raises(DataError, match=r"units 'fortnights since 2000-01-01' \(calendar None\) are not understood"):
        read_series(tmp_path / "bare.zarr")


def irregular_csv(tmp_path) -> tuple[Path, pd.DataFrame]:
    """A 10-minute series with the Weather file's two faults: a duplicated timestamp and a 100-minute gap."""
    frame = sine_series(seed=4, rows=80, n_columns=2, freq="10min")
    duplicate = frame.iloc[[30]].assign(v0=frame["v0"].iloc[30] + 1.0, v1=frame["v1"].iloc[30] - 2.0)
    frame = pd.concat([frame.iloc[:31], duplicate, frame.iloc[31:50], frame.iloc[59:]], ignore_index=True)  # rows 50-58 lost
    return write(tmp_path, frame, "weather.csv"), frame


def test_irregular_timestamps_name_the_option(tmp_path):
    path, frame = irregular_csv(tmp_path)
    with pytest.raises(DataError, match=r"duplicate timestamp: 2021-01-01 05:00:00 at row 31 \(line 33\) repeats the previous row's; "
                                        r"set data.irregular resample"):
        read_series(path)
    with pytest.raises(DataError, match=r"data.irregular resample: 9 missing steps, the first gap between 2021-01-01 08:10:00 "
                                        r"and 2021-01-01 09:50:00; set data.fill"):
        read_series(path, irregular="resample")
    with pytest.raises(ConfigError, match="data.irregular must be 'error' or 'resample'"):
        ForecastData(path=str(path), irregular="drop")


@pytest.mark.parametrize("fill", ["ffill", "interpolate"])
def test_resample_matches_pandas_and_feeds_splits_and_scaler(tmp_path, caplog, fill):
    path, frame = irregular_csv(tmp_path)
    reference = frame.set_index("date").resample("10min").mean()  # duplicates averaged, the gap as NaN rows
    reference = reference.ffill() if fill == "ffill" else reference.interpolate(method="time")
    with caplog.at_level("INFO"):
        series = read_series(path, irregular="resample", fill=fill)
    assert "0 rows out of time order moved into place, 1 rows averaged with another of the same timestamp, 9 missing steps inserted" in caplog.text
    shuffled = tmp_path / "shuffled.csv"
    frame.iloc[[1, 0, *range(2, len(frame))]].to_csv(shuffled, index=False)  # the first two rows swapped
    caplog.clear()
    with caplog.at_level("INFO"):
        np.testing.assert_array_equal(read_series(shuffled, irregular="resample", fill=fill).read(0, 80), series.read(0, 80))
    assert "1 rows out of time order moved into place" in caplog.text
    from seqpipe.data.regular_grid import rows_out_of_order

    blocks = np.r_[0:100, 200:300, 100:200, 300:600]  # a block of 100 rows moved: 100, not the 1 place time goes back
    assert rows_out_of_order(blocks) == 100 and rows_out_of_order(np.arange(5)) == 0
    assert rows_out_of_order(np.array([5, 1, 2, 3, 4])) == 1 and rows_out_of_order(np.array([4, 3, 2, 1])) == 3
    assert list(series.times) == list(reference.index) and series.freq == "10min" and len(series) == 80
    np.testing.assert_allclose(series.read(0, 80), reference.to_numpy(), rtol=1e-6)
    data = module(path, split=[50, 15, 15], irregular="resample", fill=fill)
    np.testing.assert_allclose(data.data_info.series.mean, reference.to_numpy()[:50].mean(0), rtol=1e-6)
    assert len(data.datasets["train"]) == 50 - SEQ - PRED + 1


def test_time_column_none_numbers_the_rows(tmp_path, frame):
    frame["date"] = frame["date"].sample(frac=1, random_state=0).to_numpy()  # shuffled: unusable as time
    path = write(tmp_path, frame)
    series = read_series(path, time_column="none", columns=["v0", "v1"])
    assert series.times is None and series.freq is None and len(series) == 60
    trained = module(path, time_column="none", columns=["v0", "v1"], split=[36, 12, 12]).data_info
    data = ForecastData(path=str(path), time_column="none", columns=["v0", "v1"])
    data.restore_data_info(trained)
    data.setup("predict")
    (item,) = list(data.datasets["predict"])
    assert item["future_time"].tolist() == list(range(60, 60 + PRED))


def offset_csv(tmp_path, frame, zone: str) -> Path:
    """``frame``'s hourly rows as local times of ``zone``, written with their UTC offsets (2021-03-28T01:00:00+01:00)."""
    local = pd.date_range("2021-03-27", periods=len(frame), freq="h", tz=zone)
    frame["date"] = local.strftime("%Y-%m-%dT%H:%M:%S") + [f"{z[:3]}:{z[3:]}" for z in local.strftime("%z")]
    return write(tmp_path, frame, "offsets.csv")


def predicted_times(path, **options) -> list:
    trained = module(path, split=[36, 12, 12], **options).data_info
    data = ForecastData(path=str(path), **options)
    data.restore_data_info(trained)
    data.setup("predict")
    batch = next(iter(torch.utils.data.DataLoader(data.datasets["predict"], batch_size=1)))
    head = Forecasting()
    head.bind(8, trained)
    return list(head.predictions(torch.zeros(1, PRED, 2, 1), batch, trained)["timestamp"].unique())


@pytest.mark.parametrize("zone, first", [("Asia/Kolkata", "2021-03-29T12:00:00+05:30"), ("Europe/Berlin", "2021-03-29T11:00:00+00:00")])
def test_timestamps_with_utc_offsets_are_forecast_in_the_files_offset_or_in_utc(tmp_path, frame, zone, first):
    """One offset throughout: forecasts in it; an offset that changes (daylight saving on 2021-03-28): in UTC."""
    path = offset_csv(tmp_path, frame, zone)
    series = read_series(path)
    assert series.freq == "h" and series.times[-1] == pd.Timestamp(pd.read_csv(path)["date"].iloc[-1])
    times = predicted_times(path)
    assert times[0] == pd.Timestamp(first) and str(times[0].tz) == str(pd.Timestamp(first).tz)
    assert times == list(pd.date_range(first, periods=PRED, freq="h"))


def test_timestamps_with_and_without_offsets_name_both_rows(tmp_path, frame):
    path = offset_csv(tmp_path, frame, "Europe/Berlin")
    frame["date"] = pd.read_csv(path)["date"]
    frame.loc[40, "date"] = frame.loc[40, "date"][:-6]
    with pytest.raises(DataError, match=r"'2021-03-27T00:00:00\+01:00' at row 0 \(line 2\) has a UTC offset, but "
                                        r"'2021-03-28T17:00:00' at row 40 \(line 42\) has none"):
        read_series(write(tmp_path, frame))


def test_day_first_dates_are_read_with_date_format(tmp_path, frame):
    frame["date"] = pd.date_range("2021-01-12", periods=60, freq="h").strftime("%d/%m/%Y %H:%M")
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"'13/01/2021 00:00' at row 24 \(line 26\) is not a date; set data.date_format"):
        read_series(path)
    assert read_series(path, date_format="%d/%m/%Y %H:%M").times[24] == pd.Timestamp("2021-01-13")
    assert predicted_times(path, date_format="%d/%m/%Y %H:%M")[0] == pd.Timestamp("2021-01-14 12:00")


def test_dates_that_read_day_first_too_warn_and_name_the_format(tmp_path, frame, recwarn):
    frame["date"] = pd.date_range("2021-01-02", periods=60, freq="min").strftime("%d.%m.%y %H:%M")  # 2 January
    path = write(tmp_path, frame)
    assert read_series(path).times[0] == pd.Timestamp("2021-02-01")  # pandas reads month first
    [warning] = [w for w in recwarn if "day first" in str(w.message)]
    assert str(warning.message) == (f"{path}: timestamps such as '02.01.21 00:00' are read month first (2021-02-01); "
                                    "each of them also reads day first: if they are, set data.date_format '%d.%m.%y %H:%M'")
    recwarn.clear()
    assert read_series(path, date_format="%d.%m.%y %H:%M").times[0] == pd.Timestamp("2021-01-02")
    assert not [w for w in recwarn if "day first" in str(w.message)]
    for unambiguous in ("%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M"):  # ISO; the 1st of January reads alike either way
        frame["date"] = pd.date_range("2021-01-01", periods=60, freq="min").strftime(unambiguous)
        read_series(write(tmp_path, frame))
    assert not [w for w in recwarn if "day first" in str(w.message)]


def test_numbers_as_timestamps_are_one_clear_error(tmp_path, frame, recwarn):
    frame["date"] = (frame["date"] - pd.Timestamp(0)) // pd.Timedelta("1s")
    with pytest.raises(DataError, match=r"timestamp '1609459200' at row 0 \(line 2\) is a number, not a date.*data.time_column none"):
        read_series(write(tmp_path, frame))
    assert not [w for w in recwarn if "infer format" in str(w.message)]


def test_a_column_of_the_model_missing_at_predict_names_the_models_columns(tmp_path, frame):
    trained = module(write(tmp_path, frame, "train.csv"), split=[36, 12, 12]).data_info
    data = ForecastData(path=str(write(tmp_path, frame.rename(columns={"v1": "w"}), "new.csv")), columns=["v0", "w"])
    data.restore_data_info(trained)
    with pytest.raises(DataError, match=r"new.csv: no column 'v1'; the value columns are \['v0', 'w'\] "
                                        r"\(the model was trained on \['v0', 'v1'\]; the file must have them\)"):
        data.setup("predict")


def test_an_empty_validation_split_is_named(tmp_path, frame):
    with pytest.raises(ConfigError, match=r"data.split \[48, 0, 12\] leaves the val split empty \(0 rows\)"):
        module(write(tmp_path, frame), split=[48, 0, 12])


def test_an_off_grid_row_is_not_sent_to_resample(tmp_path, frame):
    frame.loc[20, "date"] = frame.loc[20, "date"] + pd.Timedelta("30min")
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"row 20 \(line 22\) is at 2021-01-01 20:30:00.* off the grid .* correct or remove it"):
        read_series(path)
    frame = frame.drop(index=20)
    with pytest.raises(DataError, match=r"row 20 \(line 22\) is at 2021-01-01 21:00:00.*; set data.irregular resample"):
        read_series(write(tmp_path, frame))


@pytest.mark.parametrize("text, says", [
    ("date;load;temp\n2021-01-01 00:00:00;10,5;6,25\n2021-01-01 01:00:00;11,5;6,5\n",
     r"euro.csv, line 2: the rows have 3 comma-separated fields and the header 1; .*decimal commas"),
    ("date;load;temp\n2021-01-01 00:00:00;10.5;6.25\n", r"euro.csv, line 1: the header is one column, 'date;load;temp': the file seems separated by ';'"),
    ("date\tload\n2021-01-01 00:00:00\t10.5\n", r"euro.csv, line 1: the header is one column, 'date\\tload': the file seems separated by '\\t'"),
], ids=["decimal commas", "semicolons", "tabs"])
def test_a_table_with_another_separator_is_refused_not_read_as_an_index(tmp_path, text, says):
    """pandas reads ``10,5`` in a ';'-separated file as two comma-separated fields and silently takes the extra
    leading fields of every row as an index: the series would be garbage."""
    (tmp_path / "euro.csv").write_text(text)
    with pytest.raises(DataError, match=says):
        read_series(tmp_path / "euro.csv")


def test_rows_are_named_by_their_line_in_the_file_past_blank_lines(tmp_path):
    (tmp_path / "gaps.csv").write_text("date,load\n2021-01-01 00:00:00,1\n\n\n2021-01-01 01:00:00,x\n")
    with pytest.raises(DataError, match=r"gaps.csv, line 5: column 'load' is not numeric: row 1 holds 'x'"):
        read_series(tmp_path / "gaps.csv")
    (tmp_path / "empty_time.csv").write_text("date,load\n2021-01-01 00:00:00,1\n\n2021-01-01 01:00:00,2\n,3\n")
    with pytest.raises(DataError, match=r"empty_time.csv: the timestamp at row 2 \(line 5\) is empty"):
        read_series(tmp_path / "empty_time.csv")


def test_one_utc_offset_among_naive_timestamps_is_named_as_such(tmp_path):
    (tmp_path / "tz.csv").write_text("date,load\n2021-01-01 00:00:00,1\n2021-01-01 01:00:00+00:00,2\n2021-01-01 02:00:00,3\n")
    with pytest.raises(DataError, match=r"'2021-01-01 01:00:00\+00:00' at row 1 \(line 3\) has a UTC offset, but "
                                        r"'2021-01-01 00:00:00' at row 0 \(line 2\) has none"):
        read_series(tmp_path / "tz.csv")


def test_testing_a_checkpoint_on_rows_it_was_trained_on_is_said(series_dir, recwarn):
    trained = module(series_dir / "series.csv").data_info  # trained on rows 0-240
    for split, warned in (([240, 80, 80], False), ([100, 50, 250], True)):
        data = ForecastData(path=str(series_dir / "series.csv"), split=split)
        data.restore_data_info(trained)
        data.setup("test")
        said = [w for w in recwarn if "which the model was trained on" in str(w.message)]
        assert bool(said) == warned
    assert "puts test rows 150-400" in str(said[0].message) and "among its first 240 rows" in str(said[0].message)


def test_a_zarr_group_reads_the_chosen_arrays_whatever_the_lengths_of_others(tmp_path, frame):
    import zarr

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    for name in ("v0", "v1"):
        group.create_array(name, data=frame[name].to_numpy())
    group.create_array("notes", data=np.arange(7.0))  # another length: read only when chosen
    with pytest.raises(DataError, match=r"s.zarr: the 1-D arrays read differ in length: \{'notes': 7, 'v0': 60, 'v1': 60\}"):
        read_series(tmp_path / "s.zarr", time_column="none")
    series = read_series(tmp_path / "s.zarr", time_column="none", columns=["v0", "v1"])
    np.testing.assert_allclose(series.read(0, 60), frame[["v0", "v1"]].to_numpy(), rtol=1e-6)


def test_values_too_large_for_the_scaler_are_named(tmp_path, frame):
    frame["v1"] = frame["v1"] * 1e300
    with pytest.raises(DataError, match=r"huge.csv: column\(s\) \['v1'\] hold values too large for their mean and "
                                        r"standard deviation \(float64 overflows\)"):
        module(write(tmp_path, frame, "huge.csv"), split=[36, 12, 12])


def test_columns_of_large_offsets_small_values_and_past_float32_keep_their_variation(tmp_path):
    """Scaled in float64 and back in float64: a meter reading of 1e8 +- 3, values of 1e-12 +- 3e-13 and values of
    1e40 (past float32) each scale to what float64 gives and return to their own units."""
    frame = sine_series(seed=11, rows=120, n_columns=3)
    wave = np.sin(2 * np.pi * np.arange(len(frame)) / 12)
    frame["v0"], frame["v1"] = 1e8 + 3 * wave, 1e-12 * (10 + 3 * wave)
    frame["v2"] = 1e40 * (2 + wave)
    path = tmp_path / "scales.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    data = module(path, split=[72, 24, 24])
    values = pd.read_csv(path)[["v0", "v1", "v2"]].to_numpy(np.float64)
    mean, std = values[:72].mean(0), values[:72].std(0)
    np.testing.assert_allclose(data.data_info.series.std, std, rtol=1e-9)  # none taken for a constant column
    item = data.datasets["train"][3]
    np.testing.assert_allclose(item["x"].numpy(), ((values - mean) / std)[3 : 3 + SEQ], atol=1e-6)
    head = Forecasting()
    head.bind(8, data.data_info)
    back = head.to_original(item["y"])
    np.testing.assert_allclose(back, values[3 + SEQ : 3 + SEQ + PRED], rtol=1e-7, atol=0)
    assert back.dtype == np.float64 and np.abs(back[:, 0] - 1e8).max() > 2.5  # the 1e8 column's variation is kept


def test_a_date_format_pandas_cannot_use_is_one_error_naming_the_option(tmp_path, frame):
    path = write(tmp_path, frame, "dates.csv")
    with pytest.raises(ConfigError, match=r"^data.date_format '%s': 's' is a bad directive in format '%s'"):
        read_series(path, date_format="%s")


def test_a_zarr_columns_attribute_that_does_not_fit_the_data_is_refused(tmp_path):
    import zarr

    array = zarr.open_array(str(tmp_path / "wide.zarr"), mode="w", shape=(200, 2), dtype="f8")
    array[:] = np.random.default_rng(0).normal(size=(200, 2))
    array.attrs["columns"] = ["a", "b", "c"]
    with pytest.raises(DataError, match=r"wide.zarr: its 'columns' attribute names 3 columns, but the array has 2"):
        read_series(tmp_path / "wide.zarr")
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("a", shape=(200,), dtype="f8")[:] = np.arange(200.0)
    group.create_array("grid", shape=(200, 3), dtype="f8")
    group.attrs["columns"] = ["a", "grid"]
    with pytest.raises(DataError, match=r"group.zarr: its 'columns' attribute names \['grid'\], which are not 1-D arrays "
                                        r"of the group \(its 1-D arrays: \['a'\]; not read, not 1-D: \['grid'\]\)"):
        read_series(tmp_path / "group.zarr", time_column="none")


@pytest.mark.parametrize("text, message", [
    ("date,a,a\n2021-01-01 00:00,1,2\n", r"d.csv, line 1: columns 2 and 3 of the header are both named 'a'$"),
    ("date,a,b,\n2021-01-01 00:00,1,2,\n", r"d.csv, line 1: column 4 of the header has no name: .*a separator ending every"),
    (",date,a\n0,2021-01-01 00:00,1\n", r"d.csv, line 1: column 1 of the header has no name: .*index=False\)$"),
    ("date,time,a\n2021-01-01,00:00,1\n", r"column 'time' is not numeric: row 0 holds '00:00'; it holds times: name the "
                                          r"time column with data.time_column time \(a date and a time in two columns"),
    ("date,station,a\n2021-01-01 00:00,x,1\n", r"column 'station' is not numeric: row 0 holds 'x'; choose the value "
                                               r"columns with data.columns$"),
    ("date,Temp \xb0C\n2021-01-01 00:00,1\n", r"d.csv, line 1: is not UTF-8 text \(byte 0xb0\): save it as UTF-8$"),
])
def test_headers_pandas_would_rename_and_text_columns_are_named_with_what_to_do(tmp_path, text, message):
    (tmp_path / "d.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=message):
        read_series(tmp_path / "d.csv")


def test_columns_left_out_may_be_unnamed_or_repeated(tmp_path):
    rows = "".join(f"2021-01-01 {hour:02d}:00,1,2,{hour},\n" for hour in range(4))
    (tmp_path / "d.csv").write_text("date,a,a,b,\n" + rows)
    assert read_series(tmp_path / "d.csv", columns=["b"]).columns == ["b"]


def test_the_unnamed_time_index_of_a_frame_that_to_csv_wrote_is_the_time_column(tmp_path):
    frame = pd.DataFrame({"a": np.arange(30.0)}, index=pd.date_range("2021-01-01", periods=30, freq="h"))
    frame.to_csv(tmp_path / "indexed.csv")  # header ",a"
    series = read_series(tmp_path / "indexed.csv")
    assert series.columns == ["a"] and series.freq == "h" and series.times[0] == pd.Timestamp("2021-01-01")
