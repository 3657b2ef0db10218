"""Reading multivariate time series from CSV and zarr, with the checks forecasting needs.

A :class:`Series` is a table of numeric columns over regular timestamps. CSV files are parsed whole (a
CSV has to be read to be checked anyway); a zarr store larger than ``max_in_memory_mb`` stays on disk
and :meth:`Series.read` fetches row ranges from its chunks.

Two zarr layouts are read: an array ``(T, C)`` (or ``(T,)``), its column names in the attribute
``columns`` and no timestamps (rows are numbered); or a group of named 1-D arrays of equal length, one
of them the time coordinate, the others the columns. The time coordinate holds datetime64 values, strings
pandas parses, or numbers with a CF-style ``units`` attribute ("hours since 2000-01-01 00:00:00", as
xarray writes them); other numbers are an error rather than being read as nanoseconds.

Values must be finite: a missing value is NaN (an empty cell) and ``fill`` may repair it, but an infinity
(``inf``, or a number beyond float64 such as ``1e400``) is always an error naming its rows and columns,
since no fill policy can tell what it stood for.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from lightning.pytorch.utilities import rank_zero_info

from seqpipe.data.readers import check_fields_match_header, check_header_separator
from seqpipe.data.regular_grid import regularise
from seqpipe.data.timestamps import RowLines, infer_frequency, parse_times, row_name, zarr_times
from seqpipe.errors import ConfigError, DataError, first_few

FillPolicy = Literal["ffill", "interpolate"]
IrregularPolicy = Literal["error", "resample"]
NO_TIME_COLUMN = "none"
TIME_COLUMN_NAMES = ("date", "datetime", "time", "timestamp", "ds")
_ROWS_SHOWN = 10


@dataclass
class Series:
    """A regular multivariate series.

    ``columns``: names of the C value columns. ``times``: the T timestamps, or None when the rows are only
    numbered. ``freq``: the inferred pandas frequency (None for numbered rows). ``source``: an ``(T, C)``
    array in memory, or a :class:`ZarrColumns` read on demand. ``unused_columns``: value columns of the
    file that were not asked for.
    """

    path: str
    columns: list[str]
    times: pd.DatetimeIndex | None
    freq: str | None
    source: np.ndarray | ZarrColumns
    unused_columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.source)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` -> float64 array (stop - start, C)."""
        return np.asarray(self.source[start:stop], dtype=np.float64)

    def blocks(self, stop: int, rows: int = 65536):
        """Yield ``(first_row, float64 block)`` covering rows ``[0, stop)`` a block at a time."""
        for start in range(0, stop, rows):
            yield start, np.asarray(self.source[start : min(stop, start + rows)], dtype=np.float64)

    def future_times(self, steps: int) -> pd.DatetimeIndex | np.ndarray:
        """Timestamps of the ``steps`` rows after the last one (row numbers for a numbered series)."""
        if self.times is None:
            return np.arange(len(self), len(self) + steps)
        return pd.date_range(self.times[-1], periods=steps + 1, freq=self.freq)[1:].as_unit("ns")


class ZarrColumns:
    """Columns kept in zarr arrays, sliced by rows: ``columns[start:stop] -> (n, C)`` read from the chunks.

    ``parts``: (array, column index or None for a 1-D array) per column, in column order.
    """

    def __init__(self, parts: list[tuple[object, int | None]], length: int):
        self.parts, self.length = parts, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, rows: slice) -> np.ndarray:
        cache: dict[int, np.ndarray] = {}
        out = []
        for array, column in self.parts:
            if column is None:
                out.append(np.asarray(array[rows]))
            else:  # one read per 2-D array, not per column
                block = cache.setdefault(id(array), np.asarray(array[rows]))
                out.append(block[:, column])
        return np.stack(out, axis=1) if out else np.empty((0, 0))

    def chunk_rows(self) -> int:
        return max(array.chunks[0] for array, _ in self.parts)


def read_series(
    path: str | Path,
    *,
    time_column: str | None = None,
    columns: Sequence[str] | None = None,
    fill: FillPolicy | None = None,
    irregular: IrregularPolicy = "error",
    max_in_memory_mb: float = 512.0,
    date_format: str | None = None,
    columns_hint: str = "set data.columns",
) -> Series:
    """Read and check a series; raises :class:`DataError` naming the file and the first bad row.

    Args:
        time_column: the timestamp column; by default one named like ``date``/``time``/``timestamp``,
            else a first column of text that parses as dates, else none (rows are numbered). "none": no
            time column, the rows are steps.
        columns: the value columns to keep, in this order (default: all but the time column).
        fill: what to do with missing values: None raises an error naming them; "ffill" carries the last
            value forward; "interpolate" draws a line between neighbours. Leading gaps take the first
            observed value. Infinities are never filled (see the module docstring).
        irregular: duplicated timestamps, gaps and rows out of order: "error" names the first one;
            "resample" averages rows sharing a timestamp and inserts the missing steps of the grid, to be
            filled by ``fill`` (see :mod:`seqpipe.data.regular_grid`).
        max_in_memory_mb: zarr stores above this size are read from disk window by window.
        date_format: the timestamps' ``strptime`` format (``"%d/%m/%Y %H:%M"``); by default pandas infers it.
            Timestamps with a UTC offset keep it when it is the same on every row; when it changes
            (daylight saving) they are read in UTC.
        columns_hint: what the error for a column of ``columns`` missing from the file advises.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    check_irregular(irregular)
    if path.is_dir() or path.suffix == ".zarr":
        return _read_zarr(path, time_column, columns, fill, irregular, max_in_memory_mb, date_format, columns_hint)
    return _read_csv(path, time_column, columns, fill, irregular, date_format, columns_hint)


def _read_csv(path: Path, time_column: str | None, columns: Sequence[str] | None, fill: FillPolicy | None,
              irregular: IrregularPolicy, date_format: str | None, columns_hint: str) -> Series:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NA", "NaN", "nan", "null"])
    except pd.errors.EmptyDataError:
        raise DataError(path, "the file is empty") from None
    except UnicodeDecodeError:
        line, byte = _first_non_utf8(path)
        raise DataError(path, f"is not UTF-8 text{f' (byte {byte:#x})' if byte is not None else ''}: save it as UTF-8",
                        line=line) from None
    except (pd.errors.ParserError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(path, f"cannot be read as CSV (a truncated or damaged compressed file?): {error}") from None
    if table.empty:
        raise DataError(path, "no rows after the header")
    _check_comma_separated(path, table)
    lines = RowLines(path, len(table))
    time_column = None if time_column == NO_TIME_COLUMN else time_column or _detect_time_column(table)
    if time_column is not None and time_column not in table.columns:
        raise DataError(path, f"no time column {time_column!r}; the columns are {list(table.columns)} (set data.time_column)")
    available = [c for c in table.columns if c != time_column]
    names = _select(path, available, columns, columns_hint)
    _check_header_names(path, table, names)
    values = np.empty((len(table), len(names)), dtype=np.float64)
    for k, name in enumerate(names):
        text = table[name]
        numbers = pd.to_numeric(text, errors="coerce")
        bad = numbers.isna() & text.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(path, f"column {name!r} is not numeric: row {row} holds {text.iat[row]!r}; "
                                  f"{_not_numeric_advice(name, text.iat[row])}", line=lines.of(row))
        values[:, k] = numbers.to_numpy(dtype=np.float64)
    times = None if time_column is None else parse_times(path, table[time_column], lines, date_format)
    series = _checked_series(path, names, times, values, fill, irregular, lines=lines)
    series.unused_columns = [c for c in available if c not in names]
    return series


def _check_comma_separated(path: Path, table: pd.DataFrame) -> None:
    """Refuse a table that another separator makes look like a CSV: rows with more fields than the header (decimal
    commas; :func:`~seqpipe.data.readers.check_fields_match_header`), or a header of one column holding ';' or a
    TAB."""
    check_fields_match_header(path, table, "comma-separated", " with '.' decimals; is it separated by ';' with decimal "
                              "commas? Convert it (e.g. pandas.read_csv(path, sep=';', decimal=',').to_csv(new))")
    check_header_separator(path, table, ",", " (convert it to commas)")


def _read_zarr(path: Path, time_column, columns, fill, irregular, max_in_memory_mb, date_format, columns_hint) -> Series:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises several unrelated types for a store it cannot open
        raise DataError(path, f"cannot be opened as zarr: {error}") from None
    times = None
    if isinstance(node, zarr.Array):
        if node.ndim not in (1, 2):
            raise DataError(path, f"a zarr array must be (T,) or (T, C); this one has shape {node.shape}")
        width = 1 if node.ndim == 1 else node.shape[1]
        available = [str(c) for c in node.attrs.get("columns", [f"x{i}" for i in range(width)])]
        if len(available) != width:
            raise DataError(path, f"its 'columns' attribute names {len(available)} columns, but the array has {width}")
        parts_by_name = {name: (node, None if node.ndim == 1 else i) for i, name in enumerate(available)}
        length = node.shape[0]
    else:
        arrays = {name: array for name, array in node.arrays() if array.ndim == 1}
        time_column = None if time_column == NO_TIME_COLUMN else time_column or next((n for n in TIME_COLUMN_NAMES if n in arrays), None)
        if time_column is not None and time_column not in arrays:
            raise DataError(path, f"no time coordinate {time_column!r}; the arrays are {sorted(arrays)} (set data.time_column)")
        available = [str(c) for c in node.attrs.get("columns", sorted(n for n in arrays if n != time_column))]
        absent = [name for name in available if name not in arrays]
        if absent:
            others = sorted(name for name, array in node.arrays() if array.ndim != 1)
            raise DataError(path, f"its 'columns' attribute names {absent}, which are not 1-D arrays of the group (its "
                                  f"1-D arrays: {sorted(arrays)}" + (f"; not read, not 1-D: {others})" if others else ")"))
        parts_by_name = {name: (arrays[name], None) for name in available}
    names = _select(path, list(parts_by_name), columns, columns_hint)
    if not isinstance(node, zarr.Array):  # the arrays read (not others of the group) must be one length
        lengths = {name: arrays[name].shape[0] for name in [*names, *([time_column] if time_column else [])]}
        if len(set(lengths.values())) > 1:
            raise DataError(path, f"the 1-D arrays read differ in length: {lengths}")
        length = next(iter(lengths.values()), 0)
        if time_column is not None:
            times = zarr_times(path, time_column, arrays[time_column], date_format)
    for name in names:
        array = parts_by_name[name][0]
        if not np.issubdtype(np.dtype(array.dtype), np.number) or np.issubdtype(np.dtype(array.dtype), np.timedelta64):
            raise DataError(path, f"column {name!r} is not numeric (dtype {array.dtype})")
    if length == 0:
        raise DataError(path, "the series has no rows")
    lazy = ZarrColumns([parts_by_name[name] for name in names], length)
    size_mb = length * len(names) * 8 / 2**20
    if size_mb <= max_in_memory_mb:
        series = _checked_series(path, names, times, lazy[0:length].astype(np.float64), fill, irregular, lines=None)
    else:
        series = _checked_lazy_series(path, names, times, lazy, irregular, size_mb)
    series.unused_columns = [c for c in parts_by_name if c not in names]
    return series


def _checked_lazy_series(path: Path, names: list[str], times, lazy: ZarrColumns, irregular: IrregularPolicy, size_mb: float) -> Series:
    """A store too large to load: checked chunk by chunk, and used as it is (no fill, no resampling)."""
    too_large = f"the store is {size_mb:.3g} MB, above data.max_in_memory_mb, so it is read from disk as it is"
    infinite, missing = _bad_cells_by_chunks(lazy)
    if infinite:
        raise DataError(path, _cells_message("non-finite", infinite, names, None, _NON_FINITE_ADVICE))
    if missing:
        raise DataError(path, _cells_message("missing", missing, names, None, _MISSING_ADVICE) + f" ({too_large}: data.fill cannot repair it)")
    try:
        return _checked_series(path, names, times, lazy, None, "error", lines=None)
    except DataError as error:
        if irregular != "resample":
            raise
        raise DataError(path, f"data.irregular resample needs the series in memory ({too_large}): {error.problem}") from None


def _first_non_utf8(path: Path) -> tuple[int | None, int | None]:
    """The first line of a (possibly compressed) file that is not UTF-8, and its first byte that is not (None, None
    when every line decodes alone)."""
    with pd.io.common.get_handle(path, "rb", compression="infer", is_text=False) as handle:
        for number, line in enumerate(handle.handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, line[error.start]
    return None, None


def _check_header_names(path: Path, table: pd.DataFrame, used: list[str]) -> None:
    """Refuse a value column read (``used``, pandas' names) whose header name is empty or repeated, which pandas reads
    as an ``Unnamed: k`` column (an index written by ``to_csv``, a separator ending every line) or renames ``a.1``.
    Columns left out (``data.columns``), and an unnamed time column (a frame's DatetimeIndex), may be so."""
    header = [str(name) for name in pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]]
    for column in used:
        k = list(table.columns).index(column)
        if not header[k].strip():
            raise DataError(path, f"column {k + 1} of the header has no name: name it, or leave it out with data.columns "
                                  "(a separator ending every line, or an index that to_csv wrote: write with index=False)",
                            line=1)
        if header.count(header[k]) > 1:
            first, second = [i + 1 for i, name in enumerate(header) if name == header[k]][:2]
            raise DataError(path, f"columns {first} and {second} of the header are both named {header[k]!r}", line=1)


def _not_numeric_advice(name: str, cell: str) -> str:
    """What to do about a text cell of a value column: name the time column when it holds times, else choose columns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        is_time = pd.notna(pd.to_datetime(pd.Series([cell]), errors="coerce", format="mixed").iat[0])
    if is_time:
        return (f"it holds times: name the time column with data.time_column {name} (a date and a time in two columns "
                "must be joined into one)")
    return "choose the value columns with data.columns"


def _detect_time_column(table: pd.DataFrame) -> str | None:
    for column in table.columns:
        if str(column).strip().lower() in TIME_COLUMN_NAMES:
            return column
    first = table.columns[0]
    if pd.to_numeric(table[first], errors="coerce").isna().all():
        parsed = pd.to_datetime(table[first], errors="coerce", format="mixed", utc=True)
        if parsed.notna().all():
            return first
    return None


def _select(path: Path, available: list[str], wanted: Sequence[str] | None, hint: str) -> list[str]:
    if wanted is None:
        if not available:
            raise DataError(path, "no value columns besides the time column")
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(path, f"no column {', '.join(map(repr, unknown))}; the value columns are {available} ({hint})")
    return list(wanted)


def _bad_cells_by_chunks(columns: ZarrColumns) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(row, column) of every infinite and of every missing value, read one chunk row-range at a time."""
    infinite, missing, rows = [], [], columns.chunk_rows() * 16
    for start in range(0, len(columns), rows):
        block = np.asarray(columns[start : start + rows], dtype=np.float64)
        infinite += [(start + r, c) for r, c in zip(*np.nonzero(np.isinf(block)))]
        missing += [(start + r, c) for r, c in zip(*np.nonzero(np.isnan(block)))]
    return infinite, missing


_MISSING_ADVICE = "set data.fill to 'ffill' or 'interpolate' to fill them"
_NON_FINITE_ADVICE = "infinite, or beyond float64; data.fill does not repair them: correct or empty those cells"


def _cells_message(what: str, cells: list[tuple[int, int]], names: list[str], lines: RowLines | None, advice: str) -> str:
    rows = sorted({row for row, _ in cells})
    columns = [names[c] for c in sorted({c for _, c in cells})]
    shown = first_few([row_name(row, lines) for row in rows], _ROWS_SHOWN, unit="rows")
    return f"{len(cells)} {what} value{'' if len(cells) == 1 else 's'} in column(s) {columns} at {shown}; {advice}"


def _handle_missing(path: Path, values: np.ndarray, names: list[str], fill: FillPolicy | None, lines: RowLines | None) -> np.ndarray:
    infinite = np.isinf(values)
    if infinite.any():
        raise DataError(path, _cells_message("non-finite", list(zip(*np.nonzero(infinite))), names, lines, _NON_FINITE_ADVICE))
    missing = np.isnan(values)
    if not missing.any():
        return values
    if fill is None:
        raise DataError(path, _cells_message("missing", list(zip(*np.nonzero(missing))), names, lines, _MISSING_ADVICE))
    counts = missing.sum(axis=0)
    per_column = ", ".join(f"{names[c]} {counts[c]}" for c in np.flatnonzero(counts))
    rank_zero_info(f"{path}: data.fill {fill} filled {int(counts.sum())} missing cells of {values.size} ({per_column})")
    return _fill(path, values, names, fill)


def _fill(path: Path, values: np.ndarray, names: list[str], fill: FillPolicy) -> np.ndarray:
    """values (T, C) with NaN -> filled by ``fill``; leading gaps take the first observed value."""
    empty = [names[c] for c in np.flatnonzero(np.isnan(values).all(axis=0))]
    if empty:
        raise DataError(path, f"column(s) {empty} hold no values at all; nothing to fill from")
    frame = pd.DataFrame(values)
    frame = frame.ffill() if fill == "ffill" else frame.interpolate(method="linear", limit_direction="forward")
    return frame.bfill().to_numpy(dtype=np.float64)


def _checked_series(path: Path, names: list[str], times: pd.DatetimeIndex | None, values, fill: FillPolicy | None,
                    irregular: IrregularPolicy, lines: RowLines | None) -> Series:
    """Check (and with ``fill`` repair) the values, put the rows on a regular grid if asked, infer the frequency.

    ``values``: (T, C) float64 in memory, or a lazily read store (already checked; ``fill`` None).
    """
    if times is not None and len(times) != len(values):
        raise DataError(path, f"{len(times)} timestamps for {len(values)} rows")
    if isinstance(values, np.ndarray):
        values = _handle_missing(path, values, names, fill, lines)
    if times is not None and irregular == "resample":
        times, values = _resample(path, times, values, names, fill)
    freq = None if times is None else infer_frequency(path, times, lines)
    # float64 in memory, so the scaler's moments are the same whether a store is loaded whole or read lazily
    return Series(str(path), list(names), times, freq, values)


def _resample(path: Path, times: pd.DatetimeIndex, values: np.ndarray, names: list[str], fill: FillPolicy | None):
    """``data.irregular resample``: the rows on their regular grid, inserted steps filled by ``fill``."""
    regular = regularise(path, times, values)
    if regular.inserted_steps and fill is None:
        before, after = regular.first_gap
        raise DataError(path, f"data.irregular resample: {regular.inserted_steps} missing steps, the first gap between "
                        f"{before} and {after}; set data.fill to 'ffill' or 'interpolate' to fill them")
    if regular.merged_rows or regular.inserted_steps or regular.unsorted_rows:
        rank_zero_info(f"{path}: resampled to a regular grid: {regular.unsorted_rows} rows out of time order moved into place, "
                       f"{regular.merged_rows} rows averaged with another of the same timestamp, "
                       f"{regular.inserted_steps} missing steps inserted" + (f" and filled ({fill})" if regular.inserted_steps else ""))
    values = _fill(path, regular.values, names, fill) if regular.inserted_steps else regular.values
    return regular.times, values


def check_fill(fill: str | None) -> None:
    """Refuse a ``data.fill`` other than null, 'ffill' or 'interpolate'."""
    if fill not in (None, "ffill", "interpolate"):
        raise ConfigError(f"data.fill must be null, 'ffill' or 'interpolate', got {fill!r}")


def check_irregular(irregular: str) -> None:
    """Refuse a ``data.irregular`` other than 'error' or 'resample'."""
    if irregular not in ("error", "resample"):
        raise ConfigError(f"data.irregular must be 'error' or 'resample', got {irregular!r}")
