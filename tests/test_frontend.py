"""The strided front end of real-valued inputs: shapes, lengths, padding, and the streaming invariant."""

from __future__ import annotations

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.frontend import StridedFrontEnd
from seqpipe.mamba import MambaBlock
from streaming_checks import run_chunks, run_steps


def backbone(frontend: str, stride: int, **kwargs) -> Backbone:
    block = lambda d: MambaBlock(d, d_state=4, scan_backend="ref")  # noqa: E731
    return Backbone(d_model=8, n_layers=2, block=block, d_input=2, frontend=frontend, stride=stride, **kwargs).double().eval()


@pytest.mark.parametrize("frontend,stride,kernel", [("patch", 4, None), ("conv", 4, None), ("conv", 3, 7)])
def test_forward_equals_chunks_of_multiples_of_the_stride_and_frame_steps(frontend, stride, kernel):
    torch.manual_seed(0)
    model = backbone(frontend, stride, frontend_kernel=kernel)
    x = torch.randn(2, 10 * stride, 2, dtype=torch.float64)
    with torch.no_grad():
        full = model(x)
        chunked = run_chunks(model, x, [stride, 4 * stride, 5 * stride])
        stepped = run_steps(model, x.reshape(2, 10, stride, 2))  # one frame of `stride` samples per step
    assert full.shape == (2, 10, 8)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-10)
    torch.testing.assert_close(stepped, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("frontend", ["patch", "conv"])
def test_a_short_last_chunk_is_padded_like_forward(frontend):
    torch.manual_seed(1)
    model = backbone(frontend, 4)
    x = torch.randn(1, 18, 2, dtype=torch.float64)  # ceil(18 / 4) = 5 positions, the last one half silence
    with torch.no_grad():
        full = model(x)
        chunked = run_chunks(model, x, [8])
    assert full.shape[1] == 5
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("frontend", ["patch", "conv"])
def test_silence_padding_leaves_the_valid_positions_unchanged(frontend):
    torch.manual_seed(2)
    model = backbone(frontend, 4)
    x = torch.randn(1, 21, 2, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(1, 21, 2, dtype=torch.float64)], dim=1)
    lengths = model.output_lengths(torch.tensor([21]))
    assert lengths.tolist() == [6]
    with torch.no_grad():
        torch.testing.assert_close(model(padded, torch.tensor([21]))[:, :6], model(x), rtol=0, atol=1e-12)


def test_output_lengths_are_the_ceiling_and_linear_input_keeps_them():
    frontend = StridedFrontEnd(1, 4, "conv", stride=5)
    assert frontend.output_lengths(torch.tensor([1, 5, 6, 10, 11])).tolist() == [1, 1, 2, 2, 3]
    assert Backbone(d_model=8, n_layers=1, d_input=1).output_lengths(torch.tensor([7])).tolist() == [7]


def test_a_conv_front_end_is_a_causal_overlapping_filter():
    """Reference: position j = GELU(bias + sum over the kernel_size samples ending at (j + 1) * stride)."""
    torch.manual_seed(3)
    frontend = StridedFrontEnd(1, 3, "conv", stride=2, kernel_size=5).double()
    x = torch.randn(1, 8, 1, dtype=torch.float64)
    padded = torch.cat([torch.zeros(3), x[0, :, 0]])
    weight, bias = frontend.proj.weight.detach(), frontend.proj.bias.detach()
    expected = torch.stack([
        torch.nn.functional.gelu(bias + (weight[:, 0, :] * padded[2 * j:2 * j + 5]).sum(-1)) for j in range(4)
    ])
    torch.testing.assert_close(frontend(x)[0], expected)


def test_front_ends_reject_token_inputs_and_bad_strides():
    with pytest.raises(ValueError, match="real values"):
        Backbone(d_model=8, n_layers=1, vocab_size=5, frontend="conv", stride=4)
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        StridedFrontEnd(1, 4, "conv", stride=4, kernel_size=2)
