"""Genome windows as queries: samplers yield :class:`Window` tuples and the dataset reads each one.

A window is a span ``[start, end)`` of one chromosome that may run off either chromosome end (those
positions are read as N and masked), and a *kept* span ``[keep_start, keep_end)`` inside it: the positions
that are scored (loss, metrics, predictions). The rest of the window is context only. This one rule gives
chromosome-end padding, held-out splits that never leak labels (a window's kept span never leaves its
split's interval) and overlapping prediction windows that tile the genome exactly (each keeps its centre).

Splits are sets of :class:`Interval`; :func:`split_intervals` cuts the genome into the held-out regions
and the training rest, so training windows sampled from the rest never score a held-out base.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import torch
from torch.utils.data import Sampler

from seqpipe.errors import ConfigError

MAX_WINDOW_LENGTH = 1 << 20


class Interval(NamedTuple):
    """A half-open span ``[start, end)`` of a chromosome, 0-based."""

    chrom: str
    start: int
    end: int


class Window(NamedTuple):
    """A query for the dataset. ``continues``: the window starts where the previous one of the same
    interval ended (a model streaming with carried state keeps its state); ``label``: a BED class;
    ``strand``: "-" reads the window from the reverse strand (a BED strand column)."""

    chrom: str
    start: int
    end: int
    keep_start: int
    keep_end: int
    continues: bool = False
    label: str | None = None
    strand: str = "+"


_REGION = re.compile(r"^(?P<chrom>[^:]+)(?::(?P<start>\d+(?:\.\d+)?%|[\d,]+)-(?P<end>\d+(?:\.\d+)?%|[\d,]+))?$")


def parse_region(text: str, chrom_sizes: dict[str, int]) -> list[Interval]:
    """``chrom``, ``chrom:start-end`` (0-based, half-open) or ``chrom:80%-100%`` (decimals allowed: ``99.5%``);
    ``*`` means every chromosome.

    >>> parse_region("*:80%-100%", {"chr1": 1000})
    [Interval(chrom='chr1', start=800, end=1000)]
    """
    match = _REGION.match(text.strip())
    if match is None:
        raise ConfigError(f"region {text!r}: expected 'chrom', 'chrom:start-end' or 'chrom:80%-100%'")
    chrom = match["chrom"]
    if chrom != "*" and chrom not in chrom_sizes:
        raise ConfigError(f"region {text!r}: no chromosome {chrom!r} in the FASTA (it has {sorted(chrom_sizes)[:5]}...)")
    intervals = []
    for name in chrom_sizes if chrom == "*" else [chrom]:
        size = chrom_sizes[name]
        start, end = (0, size) if match["start"] is None else (_position(match["start"], size), _position(match["end"], size))
        if end > size:
            raise ConfigError(f"region {text!r}: {name}:{start}-{end} ends past the chromosome's end (length {size})")
        if not 0 <= start < end:
            raise ConfigError(f"region {text!r}: {name}:{start}-{end} is empty")
        intervals.append(Interval(name, start, end))
    return intervals


def _position(text: str, size: int) -> int:
    text = text.replace(",", "")
    return round(size * float(text[:-1]) / 100) if text.endswith("%") else int(text)


def merge_intervals(intervals: Sequence[Interval]) -> list[Interval]:
    """Sorted, with overlapping or touching intervals of a chromosome merged."""
    merged: list[Interval] = []
    for interval in sorted(intervals):
        if merged and merged[-1].chrom == interval.chrom and interval.start <= merged[-1].end:
            merged[-1] = merged[-1]._replace(end=max(merged[-1].end, interval.end))
        else:
            merged.append(interval)
    return merged


def subtract_intervals(intervals: Sequence[Interval], removed: Sequence[Interval]) -> list[Interval]:
    """The parts of ``intervals`` not covered by ``removed``."""
    result = []
    for interval in merge_intervals(intervals):
        cursor = interval.start
        for cut in merge_intervals(removed):
            if cut.chrom != interval.chrom or cut.end <= cursor or cut.start >= interval.end:
                continue
            if cut.start > cursor:
                result.append(Interval(interval.chrom, cursor, cut.start))
            cursor = max(cursor, cut.end)
        if cursor < interval.end:
            result.append(Interval(interval.chrom, cursor, interval.end))
    return result


def split_intervals(
    chrom_sizes: dict[str, int], val_regions: Sequence[str] = (), test_regions: Sequence[str] = ()
) -> dict[str, list[Interval]]:
    """The genome cut into ``val`` and ``test`` (the regions given) and ``train`` (everything else).

    Held-out regions may be whole chromosomes (chromosome hold-out) or spans (region hold-out); val and test
    must not overlap.
    """
    val = merge_intervals([i for text in val_regions for i in parse_region(text, chrom_sizes)])
    test = merge_intervals([i for text in test_regions for i in parse_region(text, chrom_sizes)])
    if subtract_intervals(val, test) != val:
        raise ConfigError(f"val_regions {list(val_regions)} and test_regions {list(test_regions)} overlap")
    genome = [Interval(name, 0, size) for name, size in chrom_sizes.items()]
    train = subtract_intervals(genome, val + test)
    if not train:
        raise ConfigError("val_regions and test_regions cover the whole genome: nothing is left to train on")
    return {"train": train, "val": val, "test": test}


class RandomWindowSampler(Sampler[Window]):
    """``num_windows`` random windows per epoch, each scored only inside the interval it was drawn from.

    Args:
        intervals: where windows are drawn (for example the training split).
        window_length: bases per window.
        num_windows: windows per epoch.
        weighting: "length" draws an interval with probability proportional to its length (every base equally
            likely); "uniform" draws a chromosome uniformly first, then an interval of it by length.
        generator: the source of randomness (the training loader seeds it for each epoch).

    A window starts uniformly where it fits inside its interval; an interval shorter than the window gives a
    window at its start, scored on the interval only.
    """

    def __init__(
        self,
        intervals: Sequence[Interval],
        window_length: int,
        num_windows: int,
        weighting: Literal["length", "uniform"] = "length",
        generator: torch.Generator | None = None,
    ):
        if not intervals:
            raise ConfigError("RandomWindowSampler: no intervals to draw windows from")
        self.intervals = list(intervals)
        self.window_length = check_window_length(window_length)
        self.num_windows = num_windows
        self.generator = generator
        lengths = torch.tensor([float(i.end - i.start) for i in self.intervals], dtype=torch.float64)
        if weighting == "uniform":
            chroms = [i.chrom for i in self.intervals]
            per_chrom = {c: sum(float(i.end - i.start) for i in self.intervals if i.chrom == c) for c in set(chroms)}
            lengths = lengths / torch.tensor([per_chrom[c] * len(per_chrom) for c in chroms], dtype=torch.float64)
        elif weighting != "length":
            raise ConfigError(f"weighting must be 'length' or 'uniform', got {weighting!r}")
        self.weights = lengths

    def __len__(self) -> int:
        return self.num_windows

    def __iter__(self) -> Iterator[Window]:
        picks = torch.multinomial(self.weights, self.num_windows, replacement=True, generator=self.generator)
        offsets = torch.rand(self.num_windows, generator=self.generator, dtype=torch.float64)
        for pick, offset in zip(picks.tolist(), offsets.tolist()):
            interval = self.intervals[pick]
            slack = max(0, interval.end - interval.start - self.window_length)
            start = interval.start + min(slack, int(offset * (slack + 1)))
            end = start + self.window_length
            yield Window(interval.chrom, start, end, start, min(end, interval.end))


class GridWindowSampler(Sampler[Window]):
    """Windows tiling each interval in order, for evaluation and prediction.

    Consecutive windows advance by ``stride``; each keeps (scores) its ``stride`` central bases, with
    ``(window_length - stride) // 2`` bases of context before them, so the kept spans tile every interval
    exactly once. ``stride == window_length``: no overlap, and each window ``continues`` the previous one
    (a causal model may carry its state across them). The last window of an interval may run past it:
    bases beyond the chromosome are N and masked, bases beyond the interval are context only.
    """

    def __init__(self, intervals: Sequence[Interval], window_length: int, stride: int | None = None):
        self.intervals = list(intervals)
        self.window_length = check_window_length(window_length)
        self.stride = window_length if stride is None else stride
        if not 0 < self.stride <= window_length:
            raise ConfigError(f"grid stride must be in [1, window_length={window_length}], got {self.stride}")
        self.margin = (window_length - self.stride) // 2

    def __len__(self) -> int:
        return sum(-(-(i.end - i.start) // self.stride) for i in self.intervals)

    def __iter__(self) -> Iterator[Window]:
        continuing = self.stride == self.window_length
        for interval in self.intervals:
            for keep_start in range(interval.start, interval.end, self.stride):
                start = keep_start - self.margin
                yield Window(
                    interval.chrom, start, start + self.window_length, keep_start,
                    min(keep_start + self.stride, interval.end), continues=continuing and keep_start > interval.start,
                )


class ListWindowSampler(Sampler[Window]):
    """Fixed windows (from a BED file), in file order or shuffled each epoch by ``generator``."""

    def __init__(self, windows: Sequence[Window], shuffle: bool = False, generator: torch.Generator | None = None):
        self.windows, self.shuffle, self.generator = list(windows), shuffle, generator

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[Window]:
        order = torch.randperm(len(self.windows), generator=self.generator).tolist() if self.shuffle else range(len(self.windows))
        return (self.windows[i] for i in order)


def check_window_length(window_length: int) -> int:
    """``window_length``, refused outside [1, MAX_WINDOW_LENGTH]."""
    if not 0 < window_length <= MAX_WINDOW_LENGTH:
        raise ConfigError(f"window_length must be in [1, {MAX_WINDOW_LENGTH}], got {window_length}")
    return window_length
