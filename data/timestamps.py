"""Timestamps of time series: parsed from CSV text (formats, UTC offsets, day-first dates) or read from a zarr time
coordinate (datetime64, strings, or numbers with CF units), their frequency inferred, and the file lines by which
messages name a CSV's rows."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn

from seqpipe.data.regular_grid import usual_step
from seqpipe.errors import ConfigError, DataError, first_line

_CF_UNITS = {
    "nanoseconds": "ns", "microseconds": "us", "milliseconds": "ms", "seconds": "s", "minutes": "min",
    "hours": "h", "days": "D",
}
_CF_CALENDARS = (None, "standard", "gregorian", "proleptic_gregorian")
_UTC_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)\s*$"  # how a timestamp's text ends when it carries its UTC offset
_DAY_MONTH = r"^\s*(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?:([ T])(\d{1,2}(?::\d\d){0,2}))?"  # 01/02/2021 12:00
_DATE_FORMAT_HINT = "set data.date_format to the timestamps' format (e.g. '%d/%m/%Y %H:%M' for day-first dates)"


class RowLines:
    """The line in the file of each of the ``rows`` rows pandas read (it skips blank lines), counted by reading the
    file again only when a message asks (:meth:`of`)."""

    def __init__(self, path: Path, rows: int):
        self.path, self.rows = path, rows
        self._lines: np.ndarray | None = None
        self._counted = False

    def of(self, row: int) -> int | None:
        """Row ``row``'s line; None when the lines do not add up to the rows (a quoted cell holding a line break)."""
        if not self._counted:
            with pd.io.common.get_handle(self.path, "r", compression="infer", errors="replace") as handle:
                lines = np.array([number for number, text in enumerate(handle.handle, start=1) if text.strip()])[1:]
            self._lines, self._counted = (lines if len(lines) == self.rows else None), True
        return None if self._lines is None else int(self._lines[row])


def row_name(row: int, lines: RowLines | None) -> str:
    """How messages name row ``row``: with its line in the file when ``lines`` knows it."""
    line = None if lines is None else lines.of(row)
    return f"row {row}" if line is None else f"row {row} (line {line})"


def parse_times(path: Path, text: pd.Series, lines: RowLines | None, date_format: str | None) -> pd.DatetimeIndex:
    """Timestamps from text (or datetime64): naive, in the file's UTC offset when every row has the same one,
    in UTC when it changes (daylight saving)."""
    if date_format is None and text.dtype.kind not in "mM" and not pd.isna(pd.to_numeric(text.iat[0], errors="coerce")):
        raise DataError(path, f"timestamp {text.iat[0]!r} at {row_name(0, lines)} is a number, not a date: write the "
                        "timestamps as dates (2021-01-01 00:00:00), give their format (data.date_format, e.g. '%Y%m%d'), "
                        f"or set data.time_column none to number the rows and leave {text.name!r} out with data.columns "
                        "(else it is forecast as a series)")
    if date_format is not None:
        try:  # a format pandas cannot use raises even with errors="coerce"
            pd.to_datetime(pd.Series(["2000-01-01"]), format=date_format, errors="coerce")
        except ValueError as error:
            raise ConfigError(f"data.date_format {date_format!r}: {first_line(error)} (strftime codes such as "
                              "'%d/%m/%Y %H:%M')") from None
    options = {"errors": "coerce", "format": date_format or ("mixed" if text.dtype == object else None)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Could not infer format")  # the error below names the row and data.date_format
        try:
            parsed = pd.to_datetime(text, **options)
        except ValueError:  # pandas refuses several UTC offsets in one column unless it converts them to UTC
            _check_offsets(path, text, lines)
            parsed = pd.to_datetime(text, utc=True, **options)
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        advice = f"it does not match data.date_format {date_format!r}" if date_format else _DATE_FORMAT_HINT
        if pd.isna(text.iat[row]):
            raise DataError(path, f"the timestamp at {row_name(row, lines)} is empty")
        if text.dtype.kind not in "mM":  # pandas gives NaT, not an error, for an offset among naive timestamps
            _check_offsets(path, text, lines)
        raise DataError(path, f"timestamp {text.iat[row]!r} at {row_name(row, lines)} is not a date; {advice}")
    if date_format is None and text.dtype.kind not in "mM":
        _warn_if_day_first_possible(path, text, parsed)
    return pd.DatetimeIndex(parsed).as_unit("ns")  # batches carry int64 nanoseconds, whatever unit pandas chose


def _warn_if_day_first_possible(path: Path, text: pd.Series, parsed: pd.Series) -> None:
    """Warn when every timestamp, read month first as pandas does (01/02/2021 = 2 January), also reads day first:
    nothing in the file tells the two apart, and only data.date_format can."""
    parts = text.astype(str).str.extract(_DAY_MONTH)
    if parts[0].isna().any():
        return
    first, second = parts[0].astype(int), parts[2].astype(int)
    if first.max() > 12 or second.max() > 12 or (first == second).all():
        return
    row = int(np.flatnonzero((first != second).to_numpy())[0])
    separator, year, clock_separator, clock = (parts.iat[row, i] for i in (1, 3, 4, 5))
    day_first = f"%d{separator}%m{separator}{'%Y' if len(year) == 4 else '%y'}"
    if isinstance(clock, str):
        day_first += clock_separator + ":".join(["%H", "%M", "%S"][: clock.count(":") + 1])
    if not re.fullmatch(_DAY_MONTH + r"\s*", str(text.iat[row])):  # a T, fractions, an offset: only the start is known
        day_first = day_first[:8] + "...' (then the rest of the timestamp's format)"
    else:
        day_first += "'"
    rank_zero_warn(f"{path}: timestamps such as {text.iat[row]!r} are read month first ({parsed.iat[row]:%Y-%m-%d}); "
                   f"each of them also reads day first: if they are, set data.date_format '{day_first}")


def _check_offsets(path: Path, text: pd.Series, lines: RowLines | None) -> None:
    """A UTC offset on some timestamps and not on others is an error naming the first row that differs from row 0."""
    with_offset = text.astype(str).str.contains(_UTC_OFFSET).to_numpy()
    differs = np.flatnonzero(with_offset != with_offset[0])
    if differs.size:
        row = int(differs[0])
        has, lacks = (row, 0) if with_offset[row] else (0, row)
        raise DataError(path, f"timestamp {text.iat[has]!r} at {row_name(has, lines)} has a UTC offset, but "
                        f"{text.iat[lacks]!r} at {row_name(lacks, lines)} has none: give every timestamp an offset, or none")


def zarr_times(path: Path, name: str, array, date_format: str | None) -> pd.DatetimeIndex:
    """The time coordinate: datetime64, date strings, or numbers with CF-style ``units`` ("<unit> since <date>")."""
    values = np.asarray(array[:])
    if np.issubdtype(values.dtype, np.datetime64) or values.dtype.kind in "OSU":
        return parse_times(path, pd.Series(values), None, date_format)
    units = array.attrs.get("units")
    if values.dtype.kind not in "iuf" or not isinstance(units, str):
        raise DataError(path, f"time coordinate {name!r} holds {values.dtype} values without CF-style units: store "
                        "datetime64 values, or add a 'units' attribute such as 'seconds since 1970-01-01 00:00:00'")
    unit, _, origin = units.strip().partition(" since ")
    calendar = array.attrs.get("calendar")
    if unit.lower() not in _CF_UNITS or calendar not in _CF_CALENDARS:
        raise DataError(path, f"time coordinate {name!r}: units {units!r} (calendar {calendar!r}) are not understood; "
                        f"expected '<{'|'.join(_CF_UNITS)}> since <date>' on the standard calendar")
    try:
        start = pd.Timestamp(origin.strip())
    except ValueError:
        raise DataError(path, f"time coordinate {name!r}: units {units!r} give no date after 'since'") from None
    if np.isnan(values.astype(np.float64)).any():
        row = int(np.flatnonzero(np.isnan(values.astype(np.float64)))[0])
        raise DataError(path, f"time coordinate {name!r} is missing at row {row}")
    offsets = pd.to_timedelta(values, unit=_CF_UNITS[unit.lower()])
    return pd.DatetimeIndex(start.tz_localize(None) + offsets).as_unit("ns")


def infer_frequency(path: Path, times: pd.DatetimeIndex, lines: RowLines | None) -> str:
    """The series' pandas frequency; the first duplicated, out-of-order or off-grid row is an error."""
    if len(times) < 3:
        raise DataError(path, f"only {len(times)} rows: a frequency needs at least 3 timestamps")
    steps = np.diff(times.asi8)
    for row in np.flatnonzero(steps <= 0)[:1] + 1:
        at = f"{times[row]} at {row_name(int(row), lines)}"
        if steps[row - 1] == 0:
            raise DataError(path, f"duplicate timestamp: {at} repeats the previous row's; set data.irregular resample "
                                  "to average rows sharing a timestamp")
        raise DataError(path, f"timestamps are not sorted: {at} comes before the previous row's {times[row - 1]}; sort "
                              "the rows by time (data.irregular resample sorts them too, and says how many it moved)")
    freq = pd.infer_freq(times)
    if freq is not None:
        return freq
    usual = usual_step(steps)
    row = int(np.flatnonzero(steps != usual)[0]) + 1
    expected = times[row - 1] + pd.Timedelta(usual, "ns")
    on_grid = (times.asi8[row] - times.asi8[0]) % usual == 0
    advice = ("set data.irregular resample (with data.fill) to insert missing steps" if on_grid else
              "it is off the grid of that step from the first row: correct or remove it (data.irregular resample "
              "repairs only duplicates and gaps)")
    raise DataError(
        path, f"irregular timestamps: {row_name(row, lines)} is at {times[row]}, but the series steps by "
        f"{pd.Timedelta(usual, 'ns')} (expected {expected}); {advice}"
    )
