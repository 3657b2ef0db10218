"""Self-supervised pre-training data: windows of genomes (FASTA files) and of a classification set's own
sequences (labels ignored), with a masked-base or next-base target. See :class:`DNAPretrainData`."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from seqpipe.contracts import DataInfo
from seqpipe.data.base import SplitDataModule, check_options
from seqpipe.data.genome_io import Genome, padded_read
from seqpipe.data.readers import fasta_files_in, is_bed, number_shared_ids, read_records
from seqpipe.data.samplers import GridWindowSampler, Interval, RandomWindowSampler, Window, check_window_length
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import BASE_IDS, BASES, N_ID, base_index, is_base, next_base_targets, reverse_complement_ids
from seqpipe.errors import ConfigError, DataError

Objective = Literal["masked", "next_base"]


class Contigs:
    """Genomes and in-memory records behind one ``chrom_sizes`` / ``read(contig, start, end)`` interface.

    Contig names are ``"<source number>:<name>"`` so two files may share record names.
    """

    def __init__(self):
        self.chrom_sizes: dict[str, int] = {}
        self._where: dict[str, tuple[Genome | None, str | np.ndarray]] = {}

    def add_genome(self, number: int, genome: Genome) -> list[str]:
        names = []
        for chrom, size in genome.chrom_sizes.items():
            names.append(f"{number}:{chrom}")
            self.chrom_sizes[names[-1]], self._where[names[-1]] = size, (genome, chrom)
        return names

    def add_record(self, name: str, tokens: np.ndarray) -> None:
        self.chrom_sizes[name], self._where[name] = len(tokens), (None, tokens)

    def read(self, contig: str, start: int, end: int) -> np.ndarray:
        """Token ids (end - start,) uint8; positions off the contig are N."""
        genome, chrom = self._where[contig]
        if genome is not None:
            return genome.read(chrom, start, end)
        return padded_read(len(chrom), start, end, lambda lo, hi: chrom[lo:hi])


def mask_bases(ids: torch.Tensor, fraction: float, generator: torch.Generator | None = None):
    """BERT-style masking of the bases (A/C/G/T) of ``ids`` (L,): each is chosen with probability
    ``fraction``; a chosen base becomes N (80%), a random base (10%) or stays (10%). N as the mask keeps the
    vocabulary the classifier's, so the embedding transfers as it is.

    Returns (x (L,) the corrupted ids, y (L,) the original base as 0..3, mask (L,) bool: the chosen positions).
    """
    chosen = (torch.rand(ids.shape, generator=generator) < fraction) & is_base(ids)
    roll = torch.rand(ids.shape, generator=generator)
    random_bases = torch.randint(BASE_IDS[0], BASE_IDS[-1] + 1, ids.shape, generator=generator)
    x = torch.where(chosen & (roll < 0.8), N_ID, ids)
    x = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_bases, x)
    return x, base_index(ids).clamp(0, 3), chosen


class PretrainWindowDataset(Dataset):
    """A :class:`Window` -> ``{"x": (T,), "y": (T,), "mask": (T,) bool}``, T = the window's kept span.

    ``masked``: ``y`` is the original base where ``mask`` (see :func:`mask_bases`); the masking is drawn from
    torch's generator in training and from a generator seeded by the window in evaluation (the same masks
    every epoch). ``next_base``: ``y`` is the next base, ``mask`` where that is A, C, G or T.
    ``reverse_complement_p``: chance (torch's generator) of reading the window from the other strand — its
    reverse complement, whose next bases (or masked bases) are the targets.
    """

    def __init__(self, contigs: Contigs, objective: Objective, mask_fraction: float, seed: int | None,
                 reverse_complement_p: float = 0.0):
        self.contigs, self.objective, self.mask_fraction, self.seed = contigs, objective, mask_fraction, seed
        self.reverse_complement_p = reverse_complement_p

    def __getitem__(self, window: Window) -> dict[str, torch.Tensor]:
        start, end = window.start, window.keep_end
        next_base = self.objective == "next_base"
        # next-base targets: the read has one base more, the last target
        ids = torch.from_numpy(self.contigs.read(window.chrom, start, end + 1 if next_base else end)).long()
        if self.reverse_complement_p and torch.rand(()) < self.reverse_complement_p:
            ids = reverse_complement_ids(ids[None], None)[0]
        if next_base:
            x, y, mask = next_base_targets(ids)
            return {"x": x, "y": y, "mask": mask}
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed ^ zlib.crc32(f"{window.chrom}:{start}".encode()))
        x, y, mask = mask_bases(ids, self.mask_fraction, generator)
        return {"x": x, "y": y, "mask": mask}


def pad_windows(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Items -> ``x``, ``y`` (B, T) right-padded with 0, ``mask`` (B, T) False on padding, ``lengths`` (B,)."""
    lengths = torch.tensor([len(item["x"]) for item in items])
    batch = {"lengths": lengths}
    for key in ("x", "y", "mask"):
        batch[key] = torch.nn.utils.rnn.pad_sequence([item[key] for item in items], batch_first=True)
    return batch


class MixtureSampler(Sampler[Window]):
    """``share`` of each epoch's windows from one sampler, the rest from the other, in a shuffled order."""

    def __init__(self, first: Sampler, second: Sampler, share: float, generator: torch.Generator):
        self.first, self.second, self.share, self.generator = first, second, share, generator

    def __len__(self) -> int:
        return len(self.first)

    def __iter__(self):
        total = len(self.first)
        taken = round(self.share * total)
        windows = list(self.first)[:taken] + list(self.second)[: total - taken]
        return iter([windows[i] for i in torch.randperm(len(windows), generator=self.generator).tolist()])


class DNAPretrainData(SplitDataModule):
    """Pre-training windows from genomes and/or the unlabelled sequences of classification sets.

    Args:
        fasta: genome FASTA files or directories of them (plain, gzip or bgzip; ``.fa``, ``.fasta``, ``.fna``),
            or one of them. The last ``val_fraction`` of every contig is held out for validation.
        sequences: one or several classification data sets in any shape :class:`~seqpipe.data.dna.DNAClassificationData` reads
            (FASTA per class, labelled FASTA, TSV/CSV); labels are ignored — domain-adaptive pre-training on
            the very sequences a classifier will see. A seeded ``val_fraction`` of the records is held out.
        sequence_column: the sequence column of a TSV/CSV in ``sequences``.
        objective: "masked" (15% of bases, 80/10/10; bidirectional and RC-equivariant backbones) or
            "next_base" (causal backbones: a bidirectional one would see the answer).
        mask_fraction: share of the bases chosen for the masked objective.
        window_length: bases per window (records shorter than it are one window each).
        windows_per_epoch: random training windows per epoch.
        sequences_share: with both ``fasta`` and ``sequences``, the share of training windows drawn from the
            sequences (by length they would be a sliver beside a genome).
        val_fraction: share of every contig (genomes) or of the records (sequences) held out for validation.
        reverse_complement_augment: read each training window from a random strand (the reverse complement
            with chance 0.5), so the model learns both strands of sequences given on one (a promoter set's) —
            what a classifier that reads both strands (``strands: pair`` / ``average``) meets.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the windows and of the validation split of ``sequences``.
        cache_dir: where a plain-gzip FASTA is decompressed once (as for :class:`~seqpipe.data.genome.GenomeData`).

    The training loader follows :class:`~seqpipe.callbacks.SequenceLengthWarmup` (``training_window``).
    Batches: ``x``, ``y``, ``mask`` (B, T), ``lengths`` (B,) for the per-base LM heads
    (:class:`~seqpipe.tasks.per_base.NextBaseLM`, :class:`~seqpipe.tasks.per_base.MaskedBaseLM`).
    """

    def __init__(
        self,
        fasta: list[str] | str | None = None,
        sequences: list[str] | str | None = None,
        sequence_column: str = "sequence",
        objective: Objective = "masked",
        mask_fraction: float = 0.15,
        window_length: int = 1024,
        windows_per_epoch: int = 2000,
        sequences_share: float = 0.5,
        val_fraction: float = 0.05,
        reverse_complement_augment: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 42,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if not fasta and not sequences:
            raise ConfigError("DNAPretrainData needs data.fasta (genome files or folders) or data.sequences (classification data), or both")
        if objective not in ("masked", "next_base"):
            raise ConfigError(f"data.objective must be 'masked' or 'next_base', got {objective!r}")
        check_options({"batch_size": batch_size, "windows_per_epoch": windows_per_epoch},
                      {"mask_fraction": mask_fraction, "val_fraction": val_fraction, "sequences_share": sequences_share})
        self.fasta, self.sequences = ([paths] if isinstance(paths, str) else list(paths or []) for paths in (fasta, sequences))
        self.sequence_column = sequence_column
        self.objective, self.mask_fraction, self.window_length = objective, mask_fraction, check_window_length(window_length)
        self.windows_per_epoch, self.sequences_share, self.val_fraction = windows_per_epoch, sequences_share, val_fraction
        self.reverse_complement_augment = reverse_complement_augment
        self.batch_size, self.num_workers, self.seed, self.cache_dir = batch_size, num_workers, seed, cache_dir
        self.length_warmup = None  # set by seqpipe.callbacks.SequenceLengthWarmup
        self.contigs: Contigs | None = None
        self.intervals: dict[str, dict[str, list[Interval]]] = {}

    def setup(self, stage: str) -> None:
        """Open the genomes, read and tokenize the sequences, hold out the validation parts."""
        if self.contigs is None:
            self.contigs = Contigs()
            self.intervals = {"train": {"genome": [], "sequences": []}, "val": {"genome": [], "sequences": []}}
            for number, path in enumerate(fasta_files(self.fasta)):
                genome = Genome(path, self.cache_dir)
                genome.check_letters()  # before training, as GenomeData does, not when a window covers the letter
                for contig in self.contigs.add_genome(number, genome):
                    self._hold_out_tail(contig)
            self._add_sequences()
        self.data_info = DataInfo(DNATokenizer().token_input(), list(BASES),
                                  next_token_targets=self.objective == "next_base")

    def _hold_out_tail(self, contig: str) -> None:
        size = self.contigs.chrom_sizes[contig]
        cut = int(size * (1 - self.val_fraction))
        self.intervals["train"]["genome"].append(Interval(contig, 0, cut))
        if cut < size:
            self.intervals["val"]["genome"].append(Interval(contig, cut, size))

    def _add_sequences(self) -> None:
        tokenizer = DNATokenizer()
        names = []
        for number, path in enumerate(self.sequences):
            if is_bed(path):
                raise ConfigError(f"data.sequences {path} is a BED file: its rows are regions of a genome; pre-train "
                                  "on the genome itself (data.fasta), or give the sequences as FASTA or a table")
            records = number_shared_ids(list(read_records(path, labelled=False, sequence_column=self.sequence_column)))
            for index, record in enumerate(records):  # the readers refuse empty records and files
                tokens = tokenizer.encode_array(record.sequence, source=record.path, record=record.name, line=record.line_of)
                names.append(f"s{number}:{index}")
                self.contigs.add_record(names[-1], tokens)
        held_out = set(np.random.default_rng(self.seed).permutation(len(names))[: round(self.val_fraction * len(names))].tolist())
        for index, name in enumerate(names):
            split = "val" if index in held_out else "train"
            self.intervals[split]["sequences"].append(Interval(name, 0, self.contigs.chrom_sizes[name]))

    def _loader(self, split: str) -> DataLoader:
        if split not in ("train", "val"):
            raise ConfigError(f"pre-training data has no {split} split (train and val only)")
        train, length, batch_size = split == "train", self.window_length, self.batch_size
        if train:
            length, batch_size = self.training_window(length, batch_size)
        samplers, generator = {}, torch.Generator()
        for kind, intervals in self.intervals[split].items():
            if intervals and train:
                samplers[kind] = RandomWindowSampler(intervals, length, self.windows_per_epoch, "length", generator)
            elif intervals:
                samplers[kind] = GridWindowSampler(intervals, length)
        if not samplers:
            raise ConfigError(f"no {split} windows: the data is too small for data.val_fraction {self.val_fraction}")
        if len(samplers) == 2 and train:
            sampler = MixtureSampler(samplers["sequences"], samplers["genome"], self.sequences_share, generator)
        else:
            sampler = _chain(list(samplers.values()))
        dataset = PretrainWindowDataset(self.contigs, self.objective, self.mask_fraction, None if train else self.seed,
                                        reverse_complement_p=0.5 if train and self.reverse_complement_augment else 0.0)
        return self.split_loader(split, dataset, seed=self.seed, batch_size=batch_size, sampler=sampler, generator=generator,
                                 num_workers=self.num_workers, collate_fn=pad_windows)


def _chain(samplers: list[Sampler]) -> Sampler | list[Window]:
    """One sampler as it is, or the windows of several, one sampler's after another's."""
    return [window for sampler in samplers for window in sampler] if len(samplers) > 1 else samplers[0]


def fasta_files(paths: list[str]) -> list[Path]:
    """Files as given, and the FASTA files of each directory (:func:`~seqpipe.data.readers.fasta_files_in`)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += fasta_files_in(path, "")
        elif not path.is_file():
            raise DataError(path, "no such FASTA file or folder")
        else:
            files.append(path)
    return files
