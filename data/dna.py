"""DNA sequence classification data: FASTA or TSV/CSV files in, padded token batches out."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.data.base import SplitDataModule, check_options, check_shift_augment, stratified_holdout
from seqpipe.data.genome import BED_NAME_COLUMN, read_bed_records
from seqpipe.data.genome_io import Genome
from seqpipe.data.readers import Record, is_bed, labels_in_headers, number_shared_ids, read_records
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import DNA_VOCAB
from seqpipe.errors import ConfigError, DataError, first_few, location

#: the single-record classes a warning names
SINGLES_SHOWN = 3
#: positions of a training batch padded to its longest record (batch_size x length) past which fit warns: 64 records
#: of 65k bases; more takes gigabytes of activations a layer (an out-of-memory error, after start-up)
LARGE_TRAINING_BATCH = 1 << 22


def example_pattern(labels: Iterable[str], most: int = 8) -> str:
    """A ``label_pattern`` for labels that are record ids: their distinct leading words (up to the first ``_``,
    ``-``, ``.``, ``|`` or ``:``), e.g. ``^(neg|pos)`` for ``pos_train_0``, ``neg_train_1``, ...; ``^(pos|neg)`` when
    they share none or have more than ``most``."""
    words = sorted({re.split(r"[_\-.|:]", label, maxsplit=1)[0] for label in labels})
    return f"^({'|'.join(map(re.escape, words))})" if 1 < len(words) <= most else "^(pos|neg)"


@dataclass
class EncodedSequences:
    """The records of one split, tokenized once and kept as uint8 arrays.

    ``tokens[i]`` (L_i,) uint8; ``labels`` (n,) int64 indices into ``label_names``, both None for
    unlabelled data; ``where[i]``: how messages name record ``i``, its file and id (or number).
    """

    ids: list[str]
    tokens: list[np.ndarray]
    where: list[str]
    labels: np.ndarray | None
    label_names: list[str] | None

    def subset(self, indices: np.ndarray) -> EncodedSequences:
        labels = None if self.labels is None else self.labels[indices]
        ids, tokens, where = ([values[i] for i in indices] for values in (self.ids, self.tokens, self.where))
        return EncodedSequences(ids, tokens, where, labels, self.label_names)


class DNASequenceDataset(Dataset):
    """Items ``{"x": LongTensor (L,), "y": int (labelled data only), "id": str, "where": str (its file and
    id, for messages)}``.

    Sequences longer than ``max_length`` are cropped: at a random offset when ``random_crop``, else as many bases
    off each end (``max_length - 1`` kept when the excess is odd: strand-symmetric). ``max_shift``: each sequence
    is moved by a uniform random number of bases ``s`` in [-max_shift, max_shift], its length kept: bases ``s:``
    then ``s`` N for ``s > 0``, ``-s`` N then bases ``:L + s`` for ``s < 0`` (a promoter's start site jitters by up
    to ``max_shift``). ``reverse_complement_p``:
    chance of replacing a sequence by its reverse complement. Randomness uses torch's generator, which the
    training loader seeds for each batch (:mod:`seqpipe.data.resumable`).
    """

    def __init__(
        self,
        data: EncodedSequences,
        tokenizer: DNATokenizer,
        max_length: int | None = None,
        random_crop: bool = False,
        reverse_complement_p: float = 0.0,
        max_shift: int = 0,
    ):
        self.data, self.tokenizer = data, tokenizer
        self.max_length, self.random_crop, self.reverse_complement_p = max_length, random_crop, reverse_complement_p
        self.max_shift = max_shift

    def __len__(self) -> int:
        return len(self.data.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        tokens = self.data.tokens[index]
        if self.max_length is not None and len(tokens) > self.max_length:
            excess = len(tokens) - self.max_length
            if self.random_crop:
                start = int(torch.randint(excess + 1, ()))
                tokens = tokens[start : start + self.max_length]
            else:  # as many bases off each end, so the crop of a reverse complement is the crop's reverse complement
                cut = (excess + 1) // 2  # an odd excess keeps max_length - 1 bases
                tokens = tokens[cut : len(tokens) - cut]
        x = torch.from_numpy(tokens).long()
        if self.max_shift:
            x = shift(x, int(torch.randint(-self.max_shift, self.max_shift + 1, ())), DNA_VOCAB["N"])
        if self.reverse_complement_p and torch.rand(()) < self.reverse_complement_p:
            x = self.tokenizer.reverse_complement(x)
        item = {"x": x, "id": self.data.ids[index], "where": self.data.where[index]}
        if self.data.labels is not None:
            item["y"] = int(self.data.labels[index])
        return item


def shift(x: torch.Tensor, offset: int, fill: int) -> torch.Tensor:
    """Token ids (L,) moved ``offset`` positions left (right when negative), ``fill`` in the vacated end; (L,)."""
    kept = x[offset:] if offset >= 0 else x[: max(len(x) + offset, 0)]
    gap = torch.full((len(x) - len(kept),), fill, dtype=x.dtype)
    return torch.cat([kept, gap] if offset >= 0 else [gap, kept])


def pad_batch(items: list[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """Items from :class:`DNASequenceDataset` -> ``{"x": (B, L), "y": (B,), "lengths": (B,), "ids": [B],
    "where": [B]}``.

    Padding is on the right, to the batch's longest sequence; ``y`` only when the items carry labels; ``where``:
    each record's file and id, for error messages.
    """
    lengths = torch.tensor([len(item["x"]) for item in items])
    x = torch.full((len(items), int(lengths.max())), pad_id, dtype=torch.long)
    for row, item in enumerate(items):
        x[row, : len(item["x"])] = item["x"]
    batch = {"x": x, "lengths": lengths, "ids": [item["id"] for item in items],
             "where": [item["where"] for item in items]}
    if "y" in items[0]:
        batch["y"] = torch.tensor([item["y"] for item in items])
    return batch


#: letters of a base (U read as T) in either case: a record with none of them is all N or other ambiguity codes
_BASE_LETTERS = frozenset("ACGTUacgtu")


class DNAClassificationData(SplitDataModule):
    """Labelled DNA sequences for classification, from any of three file shapes.

    Each PATH may be a directory with one FASTA file per class (the class is the file name without
    .fa/.fasta/.fna[.gz]), a .tsv/.csv file (plain or gzipped) with sequence and label columns, or any
    other file: a FASTA whose headers carry the label. All files are read, checked and tokenized in
    ``setup``, before training starts; a bad file raises :class:`~seqpipe.errors.DataError`.

    Classes are numbered in sorted order of their names. ``data_info`` (vocabulary size, label names,
    tokenizer) is saved in the model's checkpoint, and ``predict`` and ``test`` take the label names
    from the checkpoint when one is loaded.

    Args:
        train: training data; its labels define the classes.
        val: validation data; when unset, a seeded stratified ``val_fraction`` of ``train``.
        test: test data; its labels must all occur in the training data.
        predict: sequences to classify; labels, if any, are ignored.
        label_pattern: for a FASTA whose headers carry the label: a regular expression searched in the
            whole header; the label is its group 1, or the whole match if it has no group. The default
            takes the header's first word.
        sequence_column: for TSV/CSV: the column holding the sequences.
        label_column: the column holding the labels: for TSV/CSV its name (default "label"), for BED files its
            0-based number (default 3, the name column; a score column works too).
        id_column: for TSV/CSV: the column holding record ids (default: the column "id" when there is one, else
            the row number).
        val_fraction: share of each class of ``train`` held out for validation when ``val`` is unset.
        max_length: crop longer sequences to this length (training: a random window each epoch;
            validation, test and predict: the central window). Either way a batch is padded to its longest
            sequence, so a large ``max_length`` costs no memory.
        reverse_complement_augment: replace each training sequence by its reverse complement with
            probability 0.5 (both strands carry the same label). Never applied outside training.
        shift_augment: move each training sequence by a uniform random number of bases in
            [-shift_augment, shift_augment], filling the vacated end with N and keeping its length
            (:class:`DNASequenceDataset`'s ``max_shift``); 0: off. Never applied outside training.
        batch_size: sequences per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the train/validation split.
        fasta: the reference genome for splits given as BED files (``*.bed``, ``*.bed.gz``): each row's bases
            become a sequence (0-based half-open, within the chromosome; the reverse complement when the row's
            strand, column 6, is "-"), labelled from ``label_column``.
        cache_dir: where a plain-gzip ``fasta`` is decompressed once (default: ``$SEQPIPE_CACHE`` or
            ``~/.cache/seqpipe/genomes``).
    """

    #: how messages name an option of this module where its user sets it under another name (by default
    #: ``data.<name>``); the DNA tools map ``predict`` to their input option, ``sequence_column`` to
    #: ``--sequence_column``, ...
    option_names: dict[str, str] = {}
    #: whether a restored model's data crops new sequences to the ``max_length`` it was trained with; the DNA tools,
    #: which score whole records (streaming long ones), set False
    crop_as_trained = True

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        label_pattern: str = r"^(\S+)",
        sequence_column: str = "sequence",
        label_column: int | str | None = None,
        id_column: str | None = None,
        val_fraction: float = 0.1,
        max_length: int | None = None,
        reverse_complement_augment: bool = True,
        shift_augment: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 42,
        fasta: str | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.fasta, self.cache_dir, self.label_column = fasta, cache_dir, label_column
        check_options({"max_length": max_length, "batch_size": batch_size}, {"val_fraction": val_fraction})
        if max_length == 1:  # the strand-symmetric centre crop keeps max_length - 1 bases of an odd excess
            raise ConfigError("data.max_length must be at least 2, got 1")
        check_shift_augment(shift_augment)
        self.paths = {"train": train, "val": val, "test": test, "predict": predict}
        self.reader_options = {"label_pattern": label_pattern, "sequence_column": sequence_column, "id_column": id_column}
        self.val_fraction, self.max_length, self.seed = val_fraction, max_length, seed
        self.reverse_complement_augment, self.shift_augment = reverse_complement_augment, shift_augment
        self.batch_size, self.num_workers = batch_size, num_workers
        self.tokenizer = DNATokenizer()
        self.splits: dict[str, EncodedSequences] = {}
        self._train: EncodedSequences | None = None

    def setup(self, stage: Literal["fit", "validate", "test", "predict"]) -> None:
        """Read, check and tokenize the files the stage needs; set ``data_info``.

        ``fit`` also reads ``test`` and ``predict`` when they are set: a bad file stops the run before
        training rather than after it.
        """
        self._check_vocabulary()
        self._crop_as_trained()
        if stage == "predict":
            self.splits["predict"] = self._predict_set()
            self.data_info = self.trained_info or self.data_info
            return
        label_names = self._label_names()
        self.data_info = DataInfo(self.tokenizer.token_input(), label_names,
                                  extra={"max_length": self.max_length} if self.max_length else {})
        if stage in ("fit", "validate"):
            self.splits["val"] = self._validation_set(label_names)
        if stage == "fit":
            self.splits["train"] = self._training_set() if self.paths["val"] is not None else self._split_training_set()[0]
            self._check_training_batch(self.splits["train"])
            if self.paths["predict"] is not None:
                self.splits["predict"] = self._predict_set()
        if stage == "test" or (stage == "fit" and self.paths["test"] is not None):
            self.splits["test"] = self._encode(self._read("test"), label_names)

    def _check_training_batch(self, train: EncodedSequences) -> None:
        """Warn, before training, of a record so long that a training batch padded to it may not fit in memory (one
        of 150,000 bases among 100-base promoters: 64 x 150,000 positions, gigabytes of activations per layer)."""
        longest = int(np.argmax([len(tokens) for tokens in train.tokens]))
        length = min(len(train.tokens[longest]), self.max_length or len(train.tokens[longest]))
        if self.batch_size * length > LARGE_TRAINING_BATCH:
            fits = max(1, LARGE_TRAINING_BATCH // self.batch_size)
            rank_zero_warn(f"{train.where[longest]}: a training record of {length:,} bases: a batch of {self.batch_size} "
                           f"padded to it holds {self.batch_size * length:,} positions, which may not fit in memory: "
                           f"crop with --data.max_length {fits} or less, lower --data.batch_size, or stream long "
                           "records with --model.chunk_size (causal backbones)")

    def _crop_as_trained(self) -> None:
        """A restored model trained on sequences cropped to ``max_length`` reads new data so cropped too, unless
        ``data.max_length`` is given (then a differing value is said)."""
        trained = self.trained_info.extra.get("max_length") if self.trained_info else None
        if not self.crop_as_trained or trained is None or trained == self.max_length:
            return
        if self.max_length is None:
            self.max_length = trained
            rank_zero_info(f"data.max_length {trained}: the checkpoint's (its model was trained on sequences cropped "
                           "to it)")
        else:
            rank_zero_warn(f"data.max_length {self.max_length} differs from the {trained} the checkpoint's model was "
                           "trained with; sequences are cropped to the one given")

    def _check_vocabulary(self) -> None:
        """A restored model must have been trained on the ids this tokenizer produces (on tokens at all)."""
        if self.trained_info is not None and not isinstance(self.trained_info.input, TokenInput):
            raise ConfigError(f"the checkpoint's model reads {self.trained_info.input.channels}-channel signals (audio or a "
                              "series), not DNA: give the config it was trained with")
        trained = self.trained_info.input.vocab if self.trained_info else None
        if trained is not None and trained != self.tokenizer.vocab:
            raise ConfigError(f"the checkpoint's model was trained with the vocabulary {trained}, "
                              f"but the {self.tokenizer.name!r} tokenizer encodes with {self.tokenizer.vocab}")

    def _label_names(self) -> list[str]:
        """The classes: the sorted training labels, or the checkpoint's when only a checkpoint gives them."""
        from_checkpoint = self.trained_info.label_names if self.trained_info else None
        if self.paths["train"] is None:
            if from_checkpoint is None:
                raise ConfigError("data.train is not set: the classes come from the training data (or from --ckpt_path)")
            return list(from_checkpoint)
        from_train = self._training_set().label_names
        if from_checkpoint is not None and list(from_checkpoint) != from_train:
            raise ConfigError(
                f"the classes of data.train {self.paths['train']} are {from_train}, but the checkpoint was trained "
                f"on {list(from_checkpoint)}: pass the training data the checkpoint was made with"
            )
        return from_train

    def _training_set(self) -> EncodedSequences:
        """All of ``train``, read once; its sorted labels are the classes."""
        if self._train is None:
            records = self._read("train")
            label_names = sorted({record.label for record in records})
            if len(label_names) < 2:
                raise DataError(
                    self.paths["train"], f"only one class ({label_names[0]!r}) in the training data; a classifier needs two or more"
                )
            self._train = self._encode(records, label_names)
            self._check_class_sizes(records)
        return self._train

    def _check_class_sizes(self, records: list[Record]) -> None:
        """Refuse training labels that are record ids; warn of the classes with a single record.

        The rule: when the validation set is held out of ``train``, its labels are record ids if more than half of
        the records are the only one of their class, as when the default ``label_pattern`` takes the first word of
        headers such as ``>pos_train_0`` (one class per record). No training set of real classes looks like that: a
        class is learnt from many records, and the stratified split (:func:`~seqpipe.data.base.stratified_holdout`)
        holds out none of a single-record class, so most classes, or with every class single all of them, would be
        missing from validation. A few single-record classes (a rare class, a typo in a label), or a toy set with
        its own ``val``, still train, with a warning naming them.
        """
        path, sizes = self.paths["train"], Counter(record.label for record in records)
        singles = [record for record in records if sizes[record.label] == 1]
        if self.paths["val"] is None and 2 * len(singles) > len(records):
            example = singles[0]
            if labels_in_headers(path) and not is_bed(path):
                advice = (f"each header's label is what --data.label_pattern '{self.reader_options['label_pattern']}' "
                          "finds in it: put one FASTA per class in a folder and pass the folder, or set "
                          f"--data.label_pattern to a regular expression whose group 1 is the label, e.g. "
                          f"'{example_pattern(sizes)}'")
            else:
                advice = "check where the labels come from (--data.label_column, or the FASTA files of a folder)"
            raise DataError(
                path, f"{len(records)} records give {len(sizes)} distinct labels, and {len(singles)} of the records are "
                f"the only one of their class (e.g. record {example.id!r} on line {example.line} has label "
                f"{example.label!r}): the labels look like record ids, not classes; {advice}",
            )
        if singles:
            named = first_few([f"{r.label!r} ({location(r.path, r.name, r.line)})" for r in singles], SINGLES_SHOWN)
            one = len(singles) == 1
            held_out = "" if self.paths["val"] else (
                f", and the validation split held out of data.train has none of {'it' if one else 'them'}")
            rank_zero_warn(f"{'class' if one else 'classes'} {named} of data.train {'has' if one else 'have'} "
                           f"a single record: one example is too few to learn a class from{held_out}")

    def _split_training_set(self) -> tuple[EncodedSequences, EncodedSequences]:
        """(train, validation): a seeded stratified ``val_fraction`` of each class held out."""
        train = self._training_set()
        held_out = stratified_holdout(train.labels, self.val_fraction, self.seed)
        kept = np.setdiff1d(np.arange(len(train.ids)), held_out)
        return train.subset(kept), train.subset(held_out)

    def _validation_set(self, label_names: list[str]) -> EncodedSequences:
        if self.paths["val"] is not None:
            return self._encode(self._read("val"), label_names)
        if self.paths["train"] is None:
            raise ConfigError("no validation data: set data.val, or data.train to hold out data.val_fraction of it")
        return self._split_training_set()[1]

    def _predict_set(self) -> EncodedSequences:
        """All of ``predict``; records that repeat an earlier record's id get a warning, as their prediction rows
        would share it."""
        records = self._read("predict", labelled=False)
        seen, repeats = set(), []
        for record in records:
            if record.id in seen:
                repeats.append(record)
            seen.add(record.id)
        if repeats:
            first, verb = repeats[0], "repeats" if len(repeats) == 1 else "repeat"
            rank_zero_warn(f"{self.paths['predict']}: {len(repeats)} of its records {verb} an earlier record's id (the "
                           f"first repeat: {location(first.path, first.id, first.line)}); their output rows (predictions, "
                           "embeddings, maps) share the id, in input order")
        baseless = [record for record in records if _BASE_LETTERS.isdisjoint(record.sequence)]
        if baseless:
            first = baseless[0]
            rank_zero_warn(f"{self.paths['predict']}: {len(baseless)} of its records have no A, C, G or T (the first: "
                           f"{location(first.path, first.id, first.line)}); their scores say nothing of a sequence")
        return self._encode(records, None)

    def option_name(self, option: str) -> str:
        """How messages name this module's ``option`` to its user (see ``option_names``)."""
        return self.option_names.get(option, f"data.{option}")

    def _read(self, split: str, labelled: bool = True) -> list[Record]:
        path = self.paths[split]
        if path is None:
            raise ConfigError(f"{self.option_name(split)} is not set; give the path of the {split} data")
        if is_bed(path):
            if self.fasta is None:
                raise ConfigError(f"{self.option_name(split)} {path} is a BED file: give {self.option_name('fasta')}, "
                                  "the genome its rows refer to")
            column = BED_NAME_COLUMN if self.label_column is None else self.label_column
            if not isinstance(column, int):
                raise ConfigError(f"data.label_column {column!r}: {path} is a BED file, whose label column is given by "
                                  f"its 0-based number ({BED_NAME_COLUMN} = the name column)")
            with closing(Genome(self.fasta, self.cache_dir)) as genome:
                return read_bed_records(path, genome, column if labelled else None)
        column = "label" if self.label_column is None else str(self.label_column)
        return number_shared_ids(list(read_records(path, labelled=labelled, label_column=column,
                                                   option_name=self.option_name, **self.reader_options)))

    def _encode(self, records: list[Record], label_names: list[str] | None) -> EncodedSequences:
        """Tokenize ``records``; with ``label_names``, map labels to class indices, rejecting unknown labels."""
        tokens = [self.tokenizer.encode_array(r.sequence, source=r.path, record=r.name, line=r.line_of) for r in records]
        labels = None
        if label_names is not None:
            index = {name: i for i, name in enumerate(label_names)}
            for record in records:
                if record.label not in index:
                    raise self._unknown_label(record, label_names)
            labels = np.array([index[record.label] for record in records], dtype=np.int64)
        return EncodedSequences([r.id for r in records], tokens, [location(r.path, r.name) for r in records], labels,
                                label_names)

    def _unknown_label(self, record: Record, label_names: list[str]) -> Exception:
        if self.paths["train"] is None:  # the classes came from the checkpoint
            return ConfigError(
                f"{location(record.path, record.name, record.line)}: label {record.label!r} is not one of the "
                f"classes the checkpoint was trained on ({label_names})"
            )
        return DataError(
            record.path, f"label {record.label!r} does not occur in the training data (classes: {label_names})",
            record=record.name, line=record.line,
        )

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        if split not in self.splits:
            raise ConfigError(f"no {split} data: set {self.option_name(split)}")
        dataset = DNASequenceDataset(
            self.splits[split], self.tokenizer, self.max_length, random_crop=train,
            reverse_complement_p=0.5 if train and self.reverse_complement_augment else 0.0,
            max_shift=self.shift_augment if train else 0,
        )
        return self.split_loader(
            split, dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(pad_batch, pad_id=self.tokenizer.pad_id),
        )

