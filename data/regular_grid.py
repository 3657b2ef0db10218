"""Putting a real-world series on a regular time grid (``data.irregular resample``).

Logger files are rarely regular: a daylight-saving change repeats an hour, an outage leaves a gap. Here
rows sharing a timestamp are averaged and the grid steps with no row are inserted (as missing values, for
``data.fill`` to fill). The step is the series' most common one, from its first timestamp; a row off
that grid is an error, since placing it would change a value rather than repair a gap.
"""

from __future__ import annotations

import bisect

from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqpipe.errors import DataError


@dataclass
class RegularSeries:
    """``times`` (T',) on the grid, ``values`` (T', C) with NaN rows for inserted steps; ``merged_rows``:
    rows that disappeared by averaging with another of the same timestamp; ``inserted_steps``: grid steps
    added; ``first_gap``: the timestamps before and after the first gap (None without gaps); ``unsorted_rows``:
    the fewest input rows that moving puts the rest in time order (:func:`rows_out_of_order`; sorted here)."""

    times: pd.DatetimeIndex
    values: np.ndarray
    merged_rows: int
    inserted_steps: int
    first_gap: tuple[pd.Timestamp, pd.Timestamp] | None
    unsorted_rows: int = 0


def rows_out_of_order(stamps: np.ndarray) -> int:
    """Timestamps (T,) -> the fewest of them to move for the rest to be in time order: T minus the longest
    non-decreasing run of them, not necessarily adjacent (one swapped pair: 1; a block of 100 rows moved: 100)."""
    if not (np.diff(stamps) < 0).any():
        return 0
    tails: list[int] = []  # tails[k]: the smallest last stamp of a non-decreasing subsequence of length k + 1
    for stamp in stamps.tolist():
        place = bisect.bisect_right(tails, stamp)
        tails[place:place + 1] = [stamp]
    return len(stamps) - len(tails)


def usual_step(steps: np.ndarray) -> int:
    """Differences (T - 1,) between successive timestamps, in ns -> the most common one (the smallest of a tie)."""
    distinct, counts = np.unique(steps, return_counts=True)
    return int(distinct[counts.argmax()])


def regularise(path, times: pd.DatetimeIndex, values: np.ndarray) -> RegularSeries:
    """times (T,) in any order, values (T, C) float64 -> the series on its regular grid (see the module)."""
    frame = pd.DataFrame(values, index=times).groupby(level=0, sort=True).mean()
    stamps = frame.index.asi8
    if len(stamps) < 3:
        raise DataError(path, f"only {len(stamps)} distinct timestamps: a regular grid needs at least 3")
    steps = np.diff(stamps)
    step = usual_step(steps)
    off_grid = np.flatnonzero((stamps - stamps[0]) % step)
    if off_grid.size:
        row = int(off_grid[0])
        raise DataError(
            path, f"data.irregular resample: timestamp {frame.index[row]} is off the grid of step "
            f"{pd.Timedelta(step, 'ns')} from {frame.index[0]}; only duplicates and gaps are repaired"
        )
    gaps = np.flatnonzero(steps > step)
    grid = pd.date_range(frame.index[0], frame.index[-1], freq=pd.Timedelta(step, "ns")).as_unit("ns")
    regular = frame.reindex(grid)
    first_gap = (frame.index[gaps[0]], frame.index[gaps[0] + 1]) if gaps.size else None
    unsorted = rows_out_of_order(times.asi8)
    return RegularSeries(grid, regular.to_numpy(dtype=np.float64), len(times) - len(frame), len(grid) - len(frame),
                         first_gap, unsorted)
