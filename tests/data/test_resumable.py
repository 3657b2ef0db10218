"""The resumable training loader: an epoch's batches are a function of (seed, epoch), and a loader given the state
of a stopped one hands out the rest of its epoch, unread batches skipped."""

import itertools

import pytest
import torch

from seqpipe.data.audio import BucketBatchSampler
from seqpipe.data.resumable import ResumableLoader


class NoisyItems(torch.utils.data.Dataset):
    """Item i: i plus noise from torch's generator (as augmentation draws); counts the items read here."""

    def __init__(self, size: int):
        self.size, self.reads = size, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        self.reads += 1
        return index + torch.rand(())


def bucketed_loader(dataset: NoisyItems, epoch: int, num_workers: int = 0) -> ResumableLoader:
    generator = torch.Generator()
    sampler = BucketBatchSampler([index % 7 for index in range(len(dataset))], 4, shuffle=True, pool_batches=2,
                                 generator=generator)
    return ResumableLoader(dataset, seed=3, epoch=lambda: epoch, batch_sampler=sampler, generator=generator,
                           num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_given_a_stopped_ones_state_hands_out_the_rest_of_its_epoch(num_workers):
    full = list(bucketed_loader(NoisyItems(30), epoch=2))
    stopped = bucketed_loader(NoisyItems(30), epoch=2, num_workers=num_workers)
    head = list(itertools.islice(stopped, 3))
    resumed_data = NoisyItems(30)
    resumed = bucketed_loader(resumed_data, epoch=2, num_workers=num_workers)
    resumed.load_state_dict(stopped.state_dict())
    tail = list(resumed)
    assert len(full) == 8 and len(head + tail) == 8
    assert all(torch.equal(a, b) for a, b in zip(full, head + tail))  # order and noise, whatever the workers
    if num_workers == 0:
        assert resumed_data.reads == 30 - sum(map(len, head))  # the batches already trained were not read


def test_epochs_differ_and_a_state_of_another_epoch_is_ignored():
    epoch_1, epoch_2 = list(bucketed_loader(NoisyItems(30), epoch=1)), list(bucketed_loader(NoisyItems(30), epoch=2))
    assert torch.cat(epoch_1).long().tolist() != torch.cat(epoch_2).long().tolist()
    loader = bucketed_loader(NoisyItems(30), epoch=2)
    loader.load_state_dict({"epoch": 1, "batches": 8})  # saved after epoch 1's last batch: epoch 2 starts afresh
    assert all(torch.equal(a, b) for a, b in zip(list(loader), epoch_2, strict=True))
    assert loader.state_dict() == {"epoch": 2, "batches": 8}
