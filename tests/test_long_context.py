"""Long windows: chunked forward with carried state (and per-chunk checkpointing) equals the whole-window
forward, gradients included; streamed windows continue the state; the sequence-length warm-up schedule."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.callbacks import SequenceLengthWarmup
from seqpipe.chunked import chunked_forward
from seqpipe.errors import ConfigError


def backbone(kind: str) -> Backbone:
    if kind == "mamba":
        from seqpipe.mamba import MambaBlock

        block = partial(MambaBlock, d_state=4)
    elif kind == "mamba2":
        from seqpipe.mamba2 import Mamba2Block

        block = partial(Mamba2Block, d_state=4, head_dim=4, chunk_size=8)
    else:
        from seqpipe.s4 import S4Block

        block = partial(S4Block, d_state=8)
    torch.manual_seed(0)
    return Backbone(12, 2, block, vocab_size=6).double()


def tokens(seed: int, length: int = 96) -> torch.Tensor:
    return torch.randint(1, 6, (2, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["mamba", "mamba2", "s4"])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_chunked_forward_and_gradients_equal_the_whole_window(kind, checkpoint):
    model = backbone(kind)
    length = 40 if kind == "mamba" else 96  # the Mamba reference scan steps in Python: keep it short
    x = tokens(1, length)
    weights = torch.randn(2, length, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    whole = model(x)
    (whole * weights).sum().backward()
    whole_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked, _ = chunked_forward(model, x, 15, checkpoint=checkpoint)
    (chunked * weights).sum().backward()
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)
    # MambaBlock casts A, D and the Δ bias to float32 before the scan, so their gradients carry float32 rounding
    tolerance = {"rtol": 1e-5, "atol": 1e-7} if kind.startswith("mamba") else {"rtol": 1e-9, "atol": 1e-10}
    for grad, expected in zip((p.grad for p in model.parameters()), whole_grads):
        torch.testing.assert_close(grad, expected, **tolerance)


@pytest.mark.parametrize("kind", ["mamba", "s4"])
def test_streaming_in_small_or_large_chunks_gives_identical_outputs(kind):
    model = backbone(kind).eval()
    x = tokens(3, length=128)
    with torch.no_grad():
        small, _ = chunked_forward(model, x, 16)
        large, _ = chunked_forward(model, x, 64)
        # windows streamed one batch at a time, the state carried from each to the next
        state, pieces = None, []
        for start in range(0, 128, 32):
            y, state = chunked_forward(model, x[:, start:start + 32], 16, state=state)
            pieces.append(y)
    torch.testing.assert_close(small, large, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat(pieces, 1), large, rtol=0, atol=1e-12)


def state_tensors(state):
    if torch.is_tensor(state):
        return [state]
    return [t for part in state for t in state_tensors(part)]


@pytest.mark.parametrize("kind", ["mamba", "s4"])
def test_carried_state_does_not_keep_the_chunk_alive(kind):
    """The state is a few KB; a view into a chunk's activations would keep the whole chunk in memory for as
    long as the state lives (every chunk of a checkpointed training window, the stream of a genome)."""
    model = backbone(kind)
    length = int(torch.randint(200, 400, (1,)))
    with torch.no_grad():
        _, state = model.forward_chunk(tokens(5, length), model.initial_state(2, dtype=torch.float64))
    for tensor in state_tensors(state):
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), tuple(tensor.shape)


def test_model_chunk_size_and_stream_state():
    from seqpipe.model import SequenceModel
    from seqpipe.tasks.per_base import PerBaseClassification

    info = {"vocab_size": 6, "label_names": ["other", "CDS"]}
    whole = SequenceModel(backbone("s4"), PerBaseClassification(), data_info=info).double().eval()
    chunked = SequenceModel(backbone("s4"), PerBaseClassification(), data_info=info, chunk_size=20, checkpoint_chunks=True).double().eval()
    chunked.load_state_dict(whole.state_dict())
    x = tokens(4)
    with torch.no_grad():
        expected = whole({"x": x})
        torch.testing.assert_close(chunked({"x": x}), expected, rtol=0, atol=1e-10)
        first = chunked({"x": x[:, :48], "continues": torch.tensor([False, False])})
        second = chunked({"x": x[:, 48:], "continues": torch.tensor([True, True])})
        torch.testing.assert_close(torch.cat([first, second], 1), expected, rtol=0, atol=1e-10)
        with pytest.raises(ConfigError, match="batch size 1"):
            chunked({"x": x[:, 48:], "continues": torch.tensor([True, False])})


def test_warmup_stages():
    warmup = SequenceLengthWarmup([{"epochs": 2, "window_length": 64, "batch_size": 8}, {"epochs": 1, "window_length": 256, "batch_size": 2}])
    assert [warmup.stage_at(e)["window_length"] if warmup.stage_at(e) else None for e in range(5)] == [64, 64, 256, None, None]
    # a data module of shorter windows than a stage's (--data.window_length 128): the stage never lengthens them
    assert [warmup.training_window(e, 128, 4) for e in range(4)] == [(64, 8), (64, 8), (128, 2), (128, 4)]
    with pytest.raises(ConfigError, match="stage 1"):
        SequenceLengthWarmup([{"epochs": 1, "window_length": 64}])
