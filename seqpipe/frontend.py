"""A learned front end that shortens real-valued sequences (raw audio) before the backbone blocks.

A raw waveform has thousands of samples per second; the sequence blocks need far fewer positions.
The front end maps every ``stride`` input samples to one position of the residual stream:

* ``"patch"``: non-overlapping frames of ``stride`` samples, each projected linearly to ``d_model``;
* ``"conv"``: a causal strided convolution whose ``kernel_size`` (default ``2 * stride``) frames overlap
  the previous frame, followed by a GELU — a small learned filterbank, as in wav2vec-style encoders;
* ``"filterbank"``: a learned log-mel spectrogram. ``n_filters`` complex filters (a strided convolution
  with a real and an imaginary kernel each) over frames of ``kernel_size`` samples, then
  ``log(eps + |.|²)`` per filter (scaled to about [-1, 1]), then a linear map to ``d_model``. The filters
  start as Gabor filters (:func:`gabor_filters`) at mel-spaced centre frequencies, so the front end starts
  as a log-mel spectrogram — phase-invariant like MFCCs — and every kernel keeps training.

Output positions: ``ceil(L / stride)``; the input is right-padded with zeros to a multiple of ``stride``.
Position ``j`` sees only samples before ``(j + 1) * stride``, so right padding with silence never changes
the positions of the real clip (:meth:`output_lengths` gives their count).

Streaming: ``forward_chunk`` over chunks whose sizes are multiples of ``stride`` (the last chunk may be
shorter) equals ``forward``; ``step`` consumes one frame ``(B, stride, C)`` per output position.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.errors import ConfigError
from seqpipe.streaming import StreamingModule, no_weight_decay

# The filterbank's log power is floored at LOG_POWER_EPS, 54 dB under the power a unit sinusoid gives at its
# filter's centre (1/4), and scaled so that the floor is -1 and that power +1: inputs of the linear map then
# start centred and of unit range, which trained faster in our runs than the raw logarithm (bench/RESULTS.md).
LOG_POWER_EPS = 1e-6
_LOG_FLOOR, _LOG_FULL_SCALE = math.log(LOG_POWER_EPS), math.log(0.25)


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Hz -> mel (the HTK formula)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Mel (the HTK formula) -> Hz."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def gabor_filters(n_filters: int, kernel_size: int, sample_rate: float) -> torch.Tensor:
    """Complex Gabor filters at mel-spaced centre frequencies, (F, kernel_size) complex128.

    The centres split ``(0, sample_rate / 2)`` into ``n_filters + 1`` equal mel steps (as the triangles of a
    mel filterbank). Filter ``f`` is ``g_f[k] exp(-2πi c_f k / sample_rate)``: a Gaussian envelope centred in
    the frame, of unit sum, whose full width at half magnitude is the mean distance to the neighbouring
    centres — wide at high frequencies, where it spans several harmonics of the voice as a
    mel triangle does — but no narrower than a Gaussian of standard deviation ``kernel_size / 6`` allows.
    """
    mels = torch.linspace(0.0, float(hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))), n_filters + 2,
                          dtype=torch.float64)
    edges = mel_to_hz(mels)
    centres, bandwidth = edges[1:-1], (edges[2:] - edges[:-2]) / 2
    sigma = (sample_rate * math.sqrt(2 * math.log(2)) / (math.pi * bandwidth)).clamp(max=kernel_size / 6)
    k = torch.arange(kernel_size, dtype=torch.float64)
    envelope = torch.exp(-0.5 * ((k - (kernel_size - 1) / 2) / sigma[:, None]) ** 2)
    envelope = envelope / envelope.sum(-1, keepdim=True)
    return envelope * torch.exp(-2j * math.pi * centres[:, None] * k / sample_rate)


class StridedFrontEnd(StreamingModule):
    """``(B, L, d_input) -> (B, ceil(L / stride), d_model)``.

    Args:
        d_input: input channels (1 for mono audio).
        d_model: output channels.
        kind: ``"patch"`` (linear on non-overlapping frames), ``"conv"`` (causal overlapping conv + GELU) or
            ``"filterbank"`` (learned log-mel spectrogram, then linear).
        stride: input samples per output position.
        kernel_size: ``"conv"``/``"filterbank"``: samples each output sees (``>= stride``); default ``2 * stride``.
        n_filters: ``"filterbank"`` only: complex filters F.
        sample_rate: ``"filterbank"`` only: the input's rate (Hz), which places the mel-spaced filters.

    State (``"conv"``, ``"filterbank"``): the last ``kernel_size - stride`` input samples
    ``(B, kernel_size - stride, d_input)``.
    """

    def __init__(self, d_input: int, d_model: int, kind: Literal["patch", "conv", "filterbank"] = "conv", stride: int = 4,
                 kernel_size: int | None = None, n_filters: int = 40, sample_rate: float | None = None):
        super().__init__()
        if kind not in ("patch", "conv", "filterbank"):
            raise ConfigError(f"front end: kind must be 'patch', 'conv' or 'filterbank', got {kind!r}")
        kernel_size = stride if kind == "patch" else (kernel_size or 2 * stride)
        if stride < 1 or kernel_size < stride:
            raise ConfigError(f"front end: need stride >= 1 and kernel_size >= stride, got {stride} and {kernel_size}")
        self.kind, self.stride, self.history, self.d_input = kind, stride, kernel_size - stride, d_input
        if kind != "filterbank":
            self.proj = nn.Conv1d(d_input, d_model, kernel_size, stride=stride)
            return
        if sample_rate is None:
            raise ConfigError("front end 'filterbank': its filters start on the mel scale, so it needs the sample_rate "
                             "(set from the data's sample_rate, or backbone.sample_rate)")
        kernels = gabor_filters(n_filters, kernel_size, sample_rate)
        # Kernels are stored at unit peak and their unit-sum gains kept apart: an optimiser step then changes a
        # filter's shape by the same share whatever its width, and weight decay leaves the filters alone
        # (it would only shrink every power, not regularise a shape).
        peak = kernels.abs().amax(-1)
        self.filters = nn.Conv1d(d_input, 2 * n_filters, kernel_size, stride=stride, bias=False)
        with torch.no_grad():
            unit = kernels / peak[:, None]
            self.filters.weight.copy_(torch.cat([unit.real, unit.imag])[:, None, :].expand(-1, d_input, -1) / d_input)
        no_weight_decay(self.filters.weight)
        self.register_buffer("filter_gain", peak.to(torch.float32))
        self.proj = nn.Linear(n_filters, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid input lengths (B,) -> valid output positions (B,): ``ceil(lengths / stride)``."""
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d_input) -> (B, ceil(L / stride), d_model)."""
        y, _ = self.forward_chunk(x, self.initial_state(x.shape[0], x.device, x.dtype))
        return y

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(batch_size, self.history, self.d_input, device=device, dtype=dtype)

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_input), the previous samples -> (B, ceil(T / stride), d_model), the new state."""
        pad = -x.shape[1] % self.stride
        framed = torch.cat([state, F.pad(x, (0, 0, 0, pad))], dim=1)
        new_state = framed[:, framed.shape[1] - self.history:]
        if self.kind == "filterbank":
            return self.proj(self.log_power(framed)), new_state
        y = self.proj(framed.transpose(1, 2)).transpose(1, 2)
        return (F.gelu(y) if self.kind == "conv" else y), new_state

    def log_power(self, framed: torch.Tensor) -> torch.Tensor:
        """Samples (B, history + n * stride, d_input) -> ``log(eps + |filter response|²)``, scaled to -1 at the
        floor and +1 at a unit sinusoid's power, (B, n, n_filters)."""
        real, imag = self.filters(framed.transpose(1, 2)).transpose(1, 2).chunk(2, dim=-1)
        log_power = torch.log(LOG_POWER_EPS + self.filter_gain.square() * (real.square() + imag.square()))
        return (2 * log_power - _LOG_FULL_SCALE - _LOG_FLOOR) / (_LOG_FULL_SCALE - _LOG_FLOOR)

    def step(self, frame: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame (B, stride, d_input) -> one position (B, d_model), the new state."""
        y, state = self.forward_chunk(frame, state)
        return y.squeeze(1), state
