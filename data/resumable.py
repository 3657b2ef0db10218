"""The training loader that a run stopped mid-epoch resumes exactly: Lightning saves its position in the checkpoint.

An epoch's batches and their augmentation are functions of (seed, epoch), not of a generator's history: the
loader's generator, which its sampler (and batch sampler) draw the epoch's order from, is seeded with
(seed, epoch) when the epoch starts, and each batch is read with torch's generator seeded with
(seed, epoch, batch number). So a resumed run skips the batches its epoch already trained without reading them,
and the batches it reads get the very order and random numbers of the uninterrupted run, in the main process or a
worker alike (the number of workers changes nothing). Lightning's fit loop calls ``state_dict`` when it saves a
checkpoint and ``load_state_dict`` before it resumes a stopped epoch (the ``_Stateful`` loaders of its
``CombinedLoader``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def run_seed() -> int:
    """The seed ``seed_everything`` set for this run (Lightning keeps it in ``PL_GLOBAL_SEED``; its distributed
    sampler reads it there too), 0 without one."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def derived_seed(*numbers: int) -> int:
    """A 63-bit seed that is a function of ``numbers`` (a seed, an epoch, a batch number, ...)."""
    return int.from_bytes(hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest(), "little") >> 1


class SeededBatch(NamedTuple):
    """The keys of one batch's items and the seed of torch's generator while they are read."""

    seed: int
    keys: Sequence[Hashable]


class SeededReads(Dataset):
    """Reads a :class:`SeededBatch` with torch's default generator seeded by it, and puts the generator's state
    back afterwards, so the augmentation of a batch does not depend on where or after what it is read."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Hashable) -> Any:
        return self.dataset[key]

    def __getitems__(self, batch: SeededBatch) -> list[Any]:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(batch.seed)
            return [self.dataset[key] for key in batch.keys]


class _EpochBatches(Sampler[SeededBatch]):
    """The loader's batch sampler from batch ``start`` of ``epoch`` on, each batch with its seed."""

    def __init__(self, batches: Sampler, generator: torch.Generator, seed: int):
        self.batches, self.generator, self.seed = batches, generator, seed
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[SeededBatch]:
        # a generator: the seeding happens at the first batch, after the DataLoader iterator drew its workers' base
        # seed from the same generator (which it does only when it starts workers, not when it reuses them)
        self.generator.manual_seed(derived_seed(self.seed, self.epoch))
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        for number, keys in itertools.islice(enumerate(self.batches), self.start, None):
            yield SeededBatch(derived_seed(self.seed, self.epoch, number, rank), keys)


class ResumableLoader(DataLoader):
    """A training :class:`~torch.utils.data.DataLoader` that resumes mid-epoch where it stopped (see the module).

    Args:
        dataset, *args, **kwargs: as for ``DataLoader``; a sampler or batch sampler given draws its randomness
            from ``generator`` (a shuffling loader's own sampler does).
        seed: the seed of every epoch's order and augmentation.
        epoch: returns the number of the epoch that a pass over the loader trains (the trainer's current epoch).

    Lightning injects its distributed sampler (seeded with ``seed_everything``'s seed) into this loader as into
    any other; the batches it gives are still counted and seeded.
    """

    def __init__(self, dataset: Dataset, *args, seed: int, epoch: Callable[[], int], **kwargs):
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(SeededReads(dataset), *args, **kwargs)
        self.seed, self.epoch = seed, epoch
        self._batches = _EpochBatches(self.batch_sampler, self.generator, seed)
        self._position = {"epoch": 0, "batches": 0}
        self._resume: dict[str, int] | None = None

    @property
    def _index_sampler(self) -> _EpochBatches:
        # what DataLoader's iterators draw batches from (its own is the batch sampler): the seeded view of it
        return self._batches

    def __iter__(self) -> Iterator[Any]:
        return self._epoch_pass()

    def _epoch_pass(self) -> Iterator[Any]:
        # a generator: the epoch is read when the first batch is asked for, after Lightning has settled it (a resumed
        # run builds its loader before the fit loop moves past an epoch its checkpoint ended)
        epoch, start = self.epoch(), 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            start = self._resume["batches"]
        self._resume = None
        self._batches.epoch, self._batches.start = epoch, start
        self._position = {"epoch": epoch, "batches": start}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch of the latest pass and how many of its batches were handed out (Lightning asks for the next
        batch only when it trains it); before the first pass of a resumed run, the position it resumes at."""
        return dict(self._resume if self._resume is not None else self._position)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """The next pass skips the batches ``state_dict`` says were handed out, if it is the same epoch."""
        self._resume = dict(state_dict)

    def rewind_to(self, batches_done: int) -> None:
        """:class:`seqpipe.contracts.RewindableLoader`: a run stopped inside a batch (Ctrl-C) is saved so that,
        resumed, it trains that batch again."""
        self._position["batches"] = min(self._position["batches"], batches_done)
