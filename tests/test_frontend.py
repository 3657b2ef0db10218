"""The strided front ends of real-valued inputs: shapes, lengths, padding, the streaming invariant, and the
filterbank's initial log-mel response."""

from __future__ import annotations

import math

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.frontend import StridedFrontEnd
from seqpipe.mamba import MambaBlock
from streaming_checks import run_chunks, run_steps


def backbone(frontend: str, stride: int, **kwargs) -> Backbone:
    block = lambda d: MambaBlock(d, d_state=4, scan_backend="ref")  # noqa: E731
    if frontend == "filterbank":
        kwargs = {"sample_rate": 8000, "frontend_filters": 6, **kwargs}
    return Backbone(d_model=8, n_layers=2, block=block, d_input=2, frontend=frontend, stride=stride, **kwargs).double().eval()


@pytest.mark.parametrize("frontend,stride,kernel", [("patch", 4, None), ("conv", 4, None), ("conv", 3, 7), ("filterbank", 3, 10)])
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


@pytest.mark.parametrize("frontend", ["patch", "conv", "filterbank"])
def test_a_short_last_chunk_is_padded_like_forward(frontend):
    torch.manual_seed(1)
    model = backbone(frontend, 4)
    x = torch.randn(1, 18, 2, dtype=torch.float64)  # ceil(18 / 4) = 5 positions, the last one half silence
    with torch.no_grad():
        full = model(x)
        chunked = run_chunks(model, x, [8])
    assert full.shape[1] == 5
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("frontend", ["patch", "conv", "filterbank"])
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


def hz_to_mel_htk(hz: float) -> float:
    return 2595 * math.log10(1 + hz / 700)


def unscale(features: torch.Tensor) -> torch.Tensor:
    """The filterbank's scaled log power (-1 at the 1e-6 floor, +1 at power 1/4) -> power."""
    low, high = math.log(1e-6), math.log(0.25)
    return torch.exp(low + (features + 1) / 2 * (high - low)) - 1e-6


def filterbank_front_end(n_filters: int, stride: int, kernel: int, rate: int) -> StridedFrontEnd:
    """A float64 filterbank front end whose linear map is the identity: its output is the scaled log power."""
    frontend = StridedFrontEnd(1, n_filters, "filterbank", stride, kernel, n_filters, sample_rate=rate).double()
    with torch.no_grad():
        frontend.proj.weight.copy_(torch.eye(n_filters))
        frontend.proj.bias.zero_()
    return frontend


def test_a_filterbank_starts_as_a_log_mel_spectrogram():
    """Reference, frame by frame in float64: the power |sum_k g_f[k] x[k] exp(-2 pi i c_f k / rate)|^2 over the
    kernel samples ending at (j + 1) * stride, c_f the HTK-mel-spaced centres, g_f a unit-sum Gaussian centred in
    the frame whose width at half magnitude is the mean distance to the neighbouring centres (std <= kernel / 6)."""
    torch.manual_seed(4)
    n_filters, stride, kernel, rate = 12, 20, 64, 16000
    frontend = filterbank_front_end(n_filters, stride, kernel, rate)
    x = torch.randn(1, 7 * stride - 5, 1, dtype=torch.float64)
    samples = torch.cat([torch.zeros(kernel - stride), x[0, :, 0], torch.zeros(5)]).double()
    top = hz_to_mel_htk(rate / 2)
    edges = [700 * (10 ** (top * i / (n_filters + 1) / 2595) - 1) for i in range(n_filters + 2)]
    k = torch.arange(kernel, dtype=torch.float64)
    expected = torch.empty(7, n_filters, dtype=torch.float64)
    for f in range(n_filters):
        centre, width = edges[f + 1], (edges[f + 2] - edges[f]) / 2
        sigma = min(rate * math.sqrt(2 * math.log(2)) / (math.pi * width), kernel / 6)
        envelope = torch.exp(-0.5 * ((k - (kernel - 1) / 2) / sigma) ** 2)
        wave = envelope / envelope.sum() * torch.exp(-2j * math.pi * centre * k / rate)
        for j in range(7):
            response = (wave * samples[j * stride:j * stride + kernel]).sum()
            expected[j, f] = response.abs() ** 2
    torch.testing.assert_close(unscale(frontend(x)[0]), expected, rtol=1e-6, atol=1e-12)  # weights stored in float32


def test_filterbank_filters_pass_their_mel_band():
    """A unit sinusoid at a filter's centre gives power 1/4; half a bandwidth (to the neighbouring centre's
    midpoint) away, half that magnitude; the filter with the largest response to a tone is the nearest centre."""
    n_filters, stride, kernel, rate = 40, 80, 256, 8000
    frontend = filterbank_front_end(n_filters, stride, kernel, rate)
    top = hz_to_mel_htk(rate / 2)
    edges = [700 * (10 ** (top * i / (n_filters + 1) / 2595) - 1) for i in range(n_filters + 2)]
    t = torch.arange(math.ceil(kernel / stride) * stride, dtype=torch.float64) / rate  # the last frame is all tone
    phase = torch.rand(()) * 2 * math.pi

    def power(freq: float) -> torch.Tensor:  # (F,) of the one frame that sees only the tone
        return unscale(frontend(torch.cos(2 * math.pi * freq * t + phase)[None, :, None])[0, -1])

    for f in (20, 30, 38):  # filters wide enough not to be limited by the kernel length
        centre, half_width = edges[f + 1], (edges[f + 2] - edges[f]) / 4
        assert power(centre)[f].item() == pytest.approx(0.25, rel=0.01)
        for offset in (-half_width, half_width):
            assert power(centre + offset)[f].sqrt().item() == pytest.approx(0.25, rel=0.03)
    for tone in torch.empty(5).uniform_(300, 3500).tolist():
        nearest = min(range(n_filters), key=lambda f: abs(edges[f + 1] - tone))
        assert int(power(tone).argmax()) in (nearest - 1, nearest, nearest + 1)


def test_front_ends_reject_token_inputs_and_bad_strides():
    with pytest.raises(ValueError, match="real values"):
        Backbone(d_model=8, n_layers=1, vocab_size=5, frontend="conv", stride=4)
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        StridedFrontEnd(1, 4, "conv", stride=4, kernel_size=2)
    with pytest.raises(ValueError, match="needs the sample_rate"):
        StridedFrontEnd(1, 4, "filterbank", stride=4)
    with pytest.raises(ValueError, match="sample_rate goes with d_input"):
        Backbone(d_model=8, n_layers=1, frontend="filterbank", stride=4, sample_rate=8000)


@pytest.mark.parametrize("lengths", [None, torch.tensor([64, 64])], ids=["no lengths", "full lengths"])
def test_the_streamed_mean_of_a_strided_model_equals_the_whole_mean(lengths):
    """SequenceModel.mean_features counts backbone outputs (L / stride), not input samples, with or without lengths."""
    from seqpipe.model import SequenceModel
    from seqpipe.tasks.classification import SequenceClassification

    torch.manual_seed(0)
    model = SequenceModel(backbone("patch", 4), SequenceClassification()).double().eval()
    x = torch.randn(2, 64, 2, dtype=torch.float64)
    with torch.no_grad():
        whole = model.backbone(x).mean(1)  # 16 outputs of 64 samples, all valid
        torch.testing.assert_close(model.mean_features(x, lengths), whole, rtol=0, atol=1e-12)
        torch.testing.assert_close(model.mean_features(x, lengths, chunk_size=16), whole, rtol=0, atol=1e-10)


def test_a_chunk_size_that_splits_a_frame_is_refused():
    """Chunks of 10 samples at stride 4 would pad each chunk's last frame mid-sequence (12 outputs for 10 samples)."""
    from seqpipe.chunked import chunked_forward
    from seqpipe.errors import ConfigError
    from seqpipe.model import SequenceModel
    from seqpipe.tasks.classification import SequenceClassification

    model = backbone("conv", 4)
    with pytest.raises(ConfigError, match="model.chunk_size must be a positive multiple of the front end's stride 4, got 10"):
        SequenceModel(model, SequenceClassification(), chunk_size=10)
    with pytest.raises(ConfigError, match="chunk_size must be a positive multiple of the front end's stride 4, got 10"):
        chunked_forward(model, torch.randn(1, 40, 2, dtype=torch.float64), 10)
    x = torch.randn(1, 40, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(chunked_forward(model, x, 12)[0], model(x), rtol=0, atol=1e-10)
