"""Genome windows for training and whole-genome prediction: a FASTA, optional BED windows, optional zarr or
bigWig track.

The samplers in :mod:`seqpipe.data.samplers` yield window queries; :class:`GenomeWindowDataset` reads each
one from the FASTA (and the track) in its worker. See :class:`GenomeData` for the options.
"""

from __future__ import annotations

import zlib
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from seqpipe.contracts import DataInfo
from seqpipe.data.base import SplitDataModule, check_options, check_shift_augment, untrained_predict_error
from seqpipe.data.bigwig_track import BigWigTrack, open_track
from seqpipe.data.genome_io import Genome, Track
from seqpipe.data.readers import Record, open_text
from seqpipe.data.samplers import (
    GridWindowSampler, Interval, ListWindowSampler, RandomWindowSampler, Window, check_window_length,
    merge_intervals, parse_region, split_intervals,
)
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import BASES, next_base_targets
from seqpipe.errors import ConfigError, DataError

Target = Literal["track", "window_class", "next_base"]
SPLIT_NAMES = ("train", "val", "test")
#: the 0-based BED column of a row's name, where labels usually are
BED_NAME_COLUMN = 3
TOKENIZER = DNATokenizer()


class GenomeWindowDataset(Dataset):
    """Reads a :class:`Window` into an item (tensors of one window of length L).

    ``x`` (L,) token ids (N off the chromosome); ``mask`` (L,) bool: the positions scored — inside the
    window's kept span and on the chromosome (for ``next_base``: whose next base is A, C, G or T);
    ``y``: the window's class index (``window_class``), per-base class indices (L,) (``track``), or the
    next base as 0..3 = A, C, G, T (``next_base``); absent when there are no labels (prediction).
    Also ``chrom``, ``start``, ``keep_start``, ``keep_end``, ``ids`` ("chrom:start-end"), ``strand`` ("-": ``x``
    is the reverse complement of ``[start, end)``, per-base ``y`` and ``mask`` reversed with it) and, when
    streaming, ``continues``.

    A window with strand "-" (a BED strand column) is always read from the reverse strand, in every split: a
    sequence class then sees the element as it is transcribed, and per-base targets stay with their bases
    (:meth:`seqpipe.tasks.per_base.PerBaseClassification.predictions` puts them back in genome order).

    Augmentation (training): ``max_shift`` moves each window by a uniform whole number of bases in
    [-max_shift, max_shift] (its scored positions stay inside the ones it had); ``reverse_complement_p`` is the
    chance of reading the window from the other strand (``x`` reverse-complemented, per-base ``y`` and ``mask``
    reversed). Track positions without data (a bigWig's gaps, read as -1) are never scored.
    """

    def __init__(
        self,
        genome: Genome,
        target: Target,
        track: Track | BigWigTrack | None = None,
        label_names: list[str] | None = None,
        stream: bool = False,
        labelled: bool = True,
        max_shift: int = 0,
        reverse_complement_p: float = 0.0,
    ):
        self.genome, self.target, self.track, self.stream, self.labelled = genome, target, track, stream, labelled
        self.label_index = {name: i for i, name in enumerate(label_names or [])}
        self.max_shift, self.reverse_complement_p = max_shift, reverse_complement_p

    def __getitem__(self, window: Window) -> dict[str, Any]:
        if self.max_shift:
            window = shifted(window, int(torch.randint(-self.max_shift, self.max_shift + 1, ())))
        item = self._read(window)
        reverse = window.strand == "-"
        if self.reverse_complement_p and torch.rand(()) < self.reverse_complement_p:
            reverse = not reverse
        if reverse:
            item["x"] = TOKENIZER.reverse_complement(item["x"])
            item["mask"] = item["mask"].flip(0)
            if self.target == "track" and "y" in item:
                item["y"] = item["y"].flip(0)
        item["strand"] = "-" if reverse else "+"
        return item

    def _read(self, window: Window) -> dict[str, Any]:
        chrom, start, end = window.chrom, window.start, window.end
        size = self.genome.chrom_sizes[chrom]
        positions = np.arange(start, end)
        mask = (positions >= max(window.keep_start, 0)) & (positions < min(window.keep_end, size))
        item: dict[str, Any] = {
            "chrom": chrom, "start": start, "keep_start": window.keep_start, "keep_end": window.keep_end,
            "ids": f"{chrom}:{start}-{end}",
        }
        if self.target == "next_base":
            item["x"], item["y"], bases = next_base_targets(torch.from_numpy(self.genome.read(chrom, start, end + 1)).long())
            mask &= bases.numpy()
        else:
            item["x"] = torch.from_numpy(self.genome.read(chrom, start, end)).long()
            if self.target == "track" and self.track is not None:
                item["y"] = torch.from_numpy(self.track.read(chrom, start, end))
                mask &= item["y"].numpy() >= 0
            elif self.target == "window_class" and self.labelled:
                item["y"] = self.label_index[window.label]  # GenomeData.setup checked every BED row's class
        item["mask"] = torch.from_numpy(mask)
        if self.stream:
            item["continues"] = window.continues
        return item


class BedRow(NamedTuple):
    """One BED row: its window (``strand`` "+" unless column 6 says "-"), its split name, its 1-based line."""

    window: Window
    split: str | None
    line: int


def read_bed(
    path: str | Path, chrom_sizes: dict[str, int], label_column: int | None = None, split_column: int | None = None
) -> list[BedRow]:
    """BED rows (plain or gzip) -> windows (label from ``label_column``, strand from column 6) with their split
    names (from ``split_column``) and lines.

    Columns are 0-based indices (3 = the BED name column). Header lines (``#``, ``track``, ``browser``) are
    skipped; every other row must name a FASTA chromosome and have ``0 <= start < end <= `` its size; a strand
    column, when present, holds "+", "-" or "." (no strand: read as "+").
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such BED file")
    rows = []
    needed = max(2, label_column or 0, split_column or 0)
    try:
        with open_text(path) as lines:
            for number, text in enumerate(lines, start=1):
                if not text.strip() or text.startswith(("#", "track", "browser")):
                    continue
                rows.append(_bed_row(path, number, text.rstrip("\n").split("\t"), needed, chrom_sizes, label_column, split_column))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as error:
        raise DataError(path, f"cannot be read as a (gzipped) text BED file: {error}") from None
    if not rows:
        raise DataError(path, "no BED rows")
    return rows


def _bed_row(path: Path, number: int, row: list[str], needed: int, chrom_sizes: dict[str, int],
             label_column: int | None, split_column: int | None) -> BedRow:
    if len(row) <= needed:
        raise DataError(path, f"{len(row)} tab-separated columns, but column {needed} (0-based) is needed", line=number)
    chrom, start, end = row[0], row[1], row[2]
    if chrom not in chrom_sizes:
        raise DataError(path, f"chromosome {chrom!r} is not in the FASTA", line=number)
    if not (start.isdigit() and end.isdigit() and int(start) < int(end)):
        raise DataError(path, f"start {start!r} and end {end!r} must be integers with start < end", line=number)
    if int(end) > chrom_sizes[chrom]:
        raise DataError(path, f"{chrom}:{start}-{end} ends past the end of {chrom} ({chrom_sizes[chrom]:,} bases; "
                              "BED is 0-based, half-open): is the BED for another assembly?", line=number)
    # column 6 (0-based 5) is the strand, unless the label or split is read from it
    strand = row[5] if len(row) > 5 and 5 not in (label_column, split_column) else "."
    if strand not in ("+", "-", "."):
        raise DataError(path, f"strand (column 6) {strand!r} must be '+', '-' or '.'", line=number)
    split = None if split_column is None else row[split_column]
    if split is not None and split not in SPLIT_NAMES:
        raise DataError(path, f"split {split!r} must be one of {SPLIT_NAMES}", line=number)
    label = None if label_column is None else row[label_column]
    window = Window(chrom, int(start), int(end), int(start), int(end), label=label, strand="-" if strand == "-" else "+")
    return BedRow(window, split, number)


def read_bed_records(path: str | Path, genome: Genome, label_column: int | None = None) -> list[Record]:
    """BED rows -> sequence records for the sequence classification data module: the FASTA's bases,
    reverse-complemented on a "-" row; id ``chrom:start-end`` (``chrom:start-end(-)`` on the
    reverse strand, as ``bedtools getfasta -s`` names it); labelled from ``label_column``; each names its line."""
    records = []
    for window, _, line in read_bed(path, genome.chrom_sizes, label_column):
        ids = torch.from_numpy(genome.read(window.chrom, window.start, window.end)).long()
        name = f"{window.chrom}:{window.start}-{window.end}"
        if window.strand == "-":
            ids, name = TOKENIZER.reverse_complement(ids), name + "(-)"
        records.append(Record(name, TOKENIZER.decode(ids), window.label, Path(path), line))
    return records


def shifted(window: Window, shift: int) -> Window:
    """``window`` moved by ``shift`` bases; it scores only positions it scored before."""
    start, end = window.start + shift, window.end + shift
    return window._replace(start=start, end=end, keep_start=max(window.keep_start, start), keep_end=min(window.keep_end, end))


def resize(window: Window, length: int) -> Window:
    """The window of ``length`` bases around ``window``'s centre, all of it scored. When the centre falls between
    two placements, a "+" window takes the one nearer the chromosome start and a "-" window the other: read on
    its strand, a "-" element is then cut exactly as the same element on "+" would be (the same bases from its 5'
    end)."""
    start = (window.start + window.end - length + (window.strand == "-")) // 2
    return window._replace(start=start, end=start + length, keep_start=start, keep_end=start + length)


def _overlaps(window: Window, intervals: list[Interval]) -> bool:
    return any(i.chrom == window.chrom and i.start < window.end and window.start < i.end for i in intervals)


class GenomeData(SplitDataModule):
    """Windows of a reference genome with per-window, per-base or next-base targets.

    Args:
        fasta: the reference (plain, bgzip, or plain gzip — decompressed once into a cache, see
            :mod:`seqpipe.data.genome_io`).
        target: "track" (per-base classes from ``track``), "window_class" (a class per BED window, from
            ``label_column``) or "next_base" (language modelling).
        track: zarr store with one array per chromosome and a ``label_names`` attribute
            (``seqpipe track`` writes one), or a bigWig of class indices per base
            (:mod:`seqpipe.data.bigwig_track`; bases without data are not scored).
        track_label_names: the class names of a bigWig track (index = value).
        bed: windows to use instead of sampled ones (plain or gzipped BED), resized around their centre to
            ``window_length``; a row whose strand (column 6) is "-" is read from the reverse strand (see
            :class:`GenomeWindowDataset`). Per-base targets score exactly the bases of the rows: a training
            window is centred on a row that fits in it (the rest is context); longer rows and val, test and
            ``predict`` rows are tiled like a predict region, each tile of a long row going to the held-out split
            it touches (for ``predict`` the rows must not overlap).
        label_column: 0-based BED column with the window's class (3 = name).
        split_column: 0-based BED column with "train", "val" or "test"; without one, a BED window goes to the
            held-out split it overlaps (a window touching a held-out region never trains).
        window_length: bases per window, up to 1,048,576.
        val_regions: held-out validation regions: chromosomes ("chr2") or spans ("chr1:100-900", "*:80%-100%" =
            the last 20% of every chromosome). Training uses what no held-out region covers.
        test_regions: held-out test regions, as ``val_regions``.
        predict_regions: what ``predict`` covers (default: every chromosome).
        windows_per_epoch: random training windows per epoch (without a BED file).
        weighting: "length" (every base equally likely) or "uniform" (every chromosome equally likely).
        eval_stride: step of the grid over val/test regions (default ``window_length``: no overlap).
        predict_overlap: bases shared by consecutive prediction windows; each window keeps its centre, so
            a bidirectional model sees context on both sides of every scored base.
        stream: predict each region as one sequence: windows without overlap, one at a time, marked
            ``continues`` so a causal model carries its state from window to window.
        batch_size: windows per batch.
        num_workers: DataLoader workers (each opens its own FASTA and zarr handles).
        seed: seed of the training windows: their draws, order and augmentation (a function of seed and epoch).
        cache_dir: where a plain-gzip FASTA is decompressed (default ``$SEQPIPE_CACHE`` or ~/.cache).
        reverse_complement_augment: read each training window from a random strand ("track" and
            "window_class" targets).
        shift_augment: move each training window by up to this many bases either way (BED windows: the
            element's position in the window varies); it never scores a base outside its split.
    """

    def __init__(
        self,
        fasta: str,
        target: Target = "track",
        track: str | None = None,
        bed: str | None = None,
        label_column: int | None = None,
        split_column: int | None = None,
        window_length: int = 4096,
        val_regions: list[str | int] | None = None,
        test_regions: list[str | int] | None = None,
        predict_regions: list[str | int] | None = None,
        windows_per_epoch: int = 1000,
        weighting: Literal["length", "uniform"] = "length",
        eval_stride: int | None = None,
        predict_overlap: int = 0,
        stream: bool = False,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 42,
        cache_dir: str | None = None,
        track_label_names: list[str] | None = None,
        reverse_complement_augment: bool = False,
        shift_augment: int = 0,
    ):
        super().__init__()
        check_options({"batch_size": batch_size, "windows_per_epoch": windows_per_epoch, "eval_stride": eval_stride})
        check_shift_augment(shift_augment)
        self.track_label_names = track_label_names
        self.reverse_complement_augment, self.shift_augment = reverse_complement_augment, shift_augment
        self.fasta, self.target, self.track_path, self.bed = fasta, target, track, bed
        self.label_column, self.split_column = label_column, split_column
        self.window_length = window_length
        # a YAML list of Ensembl-style names ([1, 2, X]) reads 1 and 2 as numbers: they are chromosome names too
        self.regions = {split: [str(region) for region in regions or default] for split, regions, default in
                        (("val", val_regions, []), ("test", test_regions, []), ("predict", predict_regions, ["*"]))}
        self.windows_per_epoch, self.weighting, self.eval_stride = windows_per_epoch, weighting, eval_stride
        self.predict_overlap, self.stream = predict_overlap, stream
        self.batch_size, self.num_workers, self.seed, self.cache_dir = batch_size, num_workers, seed, cache_dir
        self._length_warmup = None
        self.genome: Genome | None = None
        self.intervals: dict[str, list[Interval]] = {}
        self.bed_windows: dict[str, list[Window]] = {}
        self._bed_rows: list[BedRow] = []
        self._datasets: dict[str, GenomeWindowDataset] = {}

    @property
    def chrom_sizes(self) -> dict[str, int]:
        return self.genome.chrom_sizes

    def _check_arguments(self, stage: str) -> None:
        """Arguments that do not fit together; checked in ``setup`` so the CLI reports them as one clear line.
        ``predict`` needs no labels: the track is read for fit, validate and test only."""
        check_window_length(self.window_length)
        if self.target == "track" and self.track_path is None and stage != "predict":
            raise ConfigError("data.target 'track' needs data.track (a zarr store; see seqpipe track)")
        if self.target == "window_class" and (self.bed is None or self.label_column is None):
            raise ConfigError("data.target 'window_class' needs data.bed and data.label_column")
        if self.label_column is not None and self.target != "window_class":
            raise ConfigError(f"data.label_column reads a class per BED row for data.target 'window_class'; with "
                              f"{self.target!r} it would be ignored: add --data.target window_class or drop it")
        if self.stream and self.predict_overlap:
            raise ConfigError("data.stream carries the state across windows, so they must not overlap: set predict_overlap 0")
        if self.reverse_complement_augment and self.target == "next_base":
            raise ConfigError("data.reverse_complement_augment would change next-base targets: use it with 'track' or 'window_class'")
        if not 0 <= self.predict_overlap < self.window_length:
            raise ConfigError(f"data.predict_overlap must be in [0, window_length), got {self.predict_overlap}")

    def setup(self, stage: str) -> None:
        """Open the genome (and track), cut the splits, and set ``data_info``."""
        self._check_arguments(stage)
        if self.genome is None:
            genome = Genome(self.fasta, self.cache_dir)
            genome.check_letters()  # here, before the trainer writes anything, not when a window covers it
            self.genome = genome
        self.intervals = split_intervals(self.chrom_sizes, self.regions["val"], self.regions["test"])
        # in genome order (FASTA order, then position), overlaps merged: the genome writer needs each base once, in order
        regions = merge_intervals([i for text in self.regions["predict"] for i in parse_region(text, self.chrom_sizes)])
        fasta_order = {chrom: k for k, chrom in enumerate(self.chrom_sizes)}
        self.intervals["predict"] = sorted(regions, key=lambda interval: (fasta_order[interval.chrom], interval.start))
        if self.bed is not None:
            self._assign_bed_windows(stage)
        label_names = self._label_names(stage)
        if self.target == "window_class" and stage != "predict":
            self._check_bed_classes(label_names)
        self.data_info = DataInfo(TOKENIZER.token_input(), label_names, next_token_targets=self.target == "next_base")
        track = self._open_track() if self.target == "track" and stage != "predict" else None
        for split in (*SPLIT_NAMES, "predict"):
            train = split == "train"
            self._datasets[split] = GenomeWindowDataset(
                self.genome, self.target, None if split == "predict" else track, label_names,
                stream=self.stream and split == "predict", labelled=split != "predict",
                max_shift=self.shift_augment if train else 0,
                reverse_complement_p=0.5 if train and self.reverse_complement_augment else 0.0,
            )

    def teardown(self, stage: str) -> None:
        """Close the files the stage opened (the genome and the track open again on the next read)."""
        for dataset in self._datasets.values():
            if dataset.track is not None:
                dataset.track.close()
        if self.genome is not None:
            self.genome.close()

    def _open_track(self):
        return open_track(self.track_path, self.chrom_sizes, self.track_label_names)

    def _label_names(self, stage: str) -> list[str]:
        if stage == "predict" and self.trained_info:
            return self.trained_info.classes("GenomeData")
        if self.target == "next_base":
            return list(BASES)
        if self.target == "window_class":
            names = sorted({w.label for w in self.bed_windows.get("train", [])})
            if len(names) < 2:
                raise DataError(self.bed, f"the training windows have {len(names)} class(es); a classifier needs two or more")
            return names
        if self.track_path is None:
            raise untrained_predict_error("the class names are the checkpoint's")
        with closing(self._open_track()) as track:
            names = track.label_names
        if len(names) < 2:
            raise DataError(self.track_path, "the track has no 'label_names' attribute with two or more classes")
        return names

    def _assign_bed_windows(self, stage: str) -> None:
        """Each BED row's windows, by split. Per-base targets score only the row's bases: a row that fits in a
        window is centred in one (the rest is context) and tiled when it is held out; a longer row is tiled, each
        tile going to the held-out split it touches, else to training."""
        self._bed_rows = read_bed(self.bed, self.chrom_sizes, self.label_column, self.split_column)
        self.bed_windows = {name: [] for name in (*SPLIT_NAMES, "predict")}
        per_base = self.target == "track"
        centred = [resize(row.window, self.window_length) for row in self._bed_rows]
        for row, window in zip(self._bed_rows, centred):
            if row.window.strand == "-" and self.target == "next_base":
                raise DataError(self.bed, "strand '-' with data.target 'next_base': next-base targets are read on the "
                                "+ strand; drop the strand column or use '+'/'.'", line=row.line)
            if per_base and row.window.end - row.window.start > self.window_length:  # each tile finds its split
                for tile in self._tiles(row.window, self.eval_stride):
                    self.bed_windows[row.split or self._held_out_split(tile)].append(tile)
                continue
            split = row.split or self._held_out_split(window)
            if per_base and split != "train":
                self.bed_windows[split] += self._tiles(row.window, self.eval_stride)
            elif per_base:
                self.bed_windows[split].append(window._replace(keep_start=row.window.start, keep_end=row.window.end))
            else:
                self.bed_windows[split].append(window)
        self.bed_windows["predict"] = self._per_base_prediction_windows() if stage == "predict" and per_base else centred

    def _held_out_split(self, window: Window) -> str:
        """The held-out split ``window`` touches ("test" first), else "train": a window touching a held-out region
        never trains."""
        return next((split for split in ("test", "val") if _overlaps(window, self.intervals[split])), "train")

    def _per_base_prediction_windows(self) -> list[Window]:
        """Per-base prediction scores exactly the BED bases, once each: the rows in genome order, each tiled as
        a predict region (:class:`GridWindowSampler`, context around its bases), read on the row's strand."""
        order = {chrom: i for i, chrom in enumerate(self.chrom_sizes)}
        rows = sorted(self._bed_rows, key=lambda row: (order[row.window.chrom], row.window.start, row.window.end))
        windows, previous = [], None
        for row in rows:
            window, line = row.window, row.line
            if previous is not None and previous.window.chrom == window.chrom and window.start < previous.window.end:
                raise DataError(self.bed, f"{window.chrom}:{window.start}-{window.end} overlaps line {previous.line} "
                                f"(ending at {previous.window.end}); per-base prediction scores each base once", line=line)
            if window.strand == "-" and self.stream:
                raise DataError(self.bed, "strand '-' with data.stream: the state is carried along the + strand; "
                                "drop the strand column or use '+'/'.'", line=line)
            windows += self._tiles(window, self.window_length - self.predict_overlap)
            previous = row
        return windows

    def _tiles(self, row: Window, stride: int | None) -> list[Window]:
        """Windows whose kept spans tile the bases of the BED ``row`` once each, read on its strand (``stride``:
        None = ``window_length``)."""
        tiles = GridWindowSampler([Interval(row.chrom, row.start, row.end)], self.window_length, stride)
        return [tile._replace(strand=row.strand, label=row.label) for tile in tiles]

    def _check_bed_classes(self, label_names: list[str]) -> None:
        for window, _, line in self._bed_rows:
            if window.label not in label_names:
                raise DataError(self.bed, f"class {window.label!r} does not occur in the training windows "
                                f"(classes: {label_names})", line=line)

    @property
    def length_warmup(self):
        """The :class:`~seqpipe.callbacks.SequenceLengthWarmup` that sets the training windows' length (see
        ``training_window``), or None; left out, with a warning, with ``bed``, whose rows fix each window."""
        return self._length_warmup

    @length_warmup.setter
    def length_warmup(self, warmup) -> None:
        if warmup is not None and self.bed is not None:  # the recipe's callback stays; it has nothing to do
            rank_zero_warn(f"SequenceLengthWarmup is not applied: data.bed {self.bed} fixes every window (its rows, "
                           "centred in data.window_length), so windows and batches keep their sizes")
            warmup = None
        self._length_warmup = warmup

    def _sampler(self, split: str, window_length: int, generator: torch.Generator):
        if self.bed is not None:
            return ListWindowSampler(self.bed_windows[split], shuffle=split == "train", generator=generator)
        if split == "train":
            return RandomWindowSampler(self.intervals["train"], window_length, self.windows_per_epoch, self.weighting, generator)
        if split == "predict":
            return GridWindowSampler(self.intervals["predict"], self.window_length, self.window_length - self.predict_overlap)
        return GridWindowSampler(self.intervals[split], self.window_length, self.eval_stride)

    def _loader(self, split: str) -> DataLoader:
        window_length, batch_size = self.window_length, self.batch_size
        if split == "train":
            window_length, batch_size = self.training_window(window_length, batch_size)
        generator = torch.Generator()
        sampler = self._sampler(split, window_length, generator)
        if len(sampler) == 0:
            if split == "train":  # only BED rows can leave it empty (the regions always leave some genome)
                raise ConfigError(f"no train windows: no row of data.bed {self.bed} is in the training split (rows "
                                  "outside data.val_regions and data.test_regions, or of split 'train' in the "
                                  "data.split_column)")
            raise ConfigError(f"no {split} windows: set data.{split}_regions (or a BED split column)")
        return self.split_loader(
            split, self._datasets[split], seed=self.seed, batch_size=1 if self.stream and split == "predict" else batch_size,
            sampler=sampler, generator=generator, num_workers=self.num_workers, persistent_workers=False,
        )
