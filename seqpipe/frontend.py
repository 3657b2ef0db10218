"""A learned front end that shortens real-valued sequences (raw audio) before the backbone blocks.

A raw waveform has thousands of samples per second; the sequence blocks need far fewer positions.
The front end maps every ``stride`` input samples to one position of the residual stream:

* ``"patch"``: non-overlapping frames of ``stride`` samples, each projected linearly to ``d_model``;
* ``"conv"``: a causal strided convolution whose ``kernel_size`` (default ``2 * stride``) frames overlap
  the previous frame, followed by a GELU — a small learned filterbank, as in wav2vec-style encoders.

Output positions: ``ceil(L / stride)``; the input is right-padded with zeros to a multiple of ``stride``.
Position ``j`` sees only samples before ``(j + 1) * stride``, so right padding with silence never changes
the positions of the real clip (:meth:`output_lengths` gives their count).

Streaming: ``forward_chunk`` over chunks whose sizes are multiples of ``stride`` (the last chunk may be
shorter) equals ``forward``; ``step`` consumes one frame ``(B, stride, C)`` per output position.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.streaming import StreamingModule


class StridedFrontEnd(StreamingModule):
    """``(B, L, d_input) -> (B, ceil(L / stride), d_model)``.

    Args:
        d_input: input channels (1 for mono audio).
        d_model: output channels.
        kind: ``"patch"`` (linear on non-overlapping frames) or ``"conv"`` (causal overlapping conv + GELU).
        stride: input samples per output position.
        kernel_size: ``"conv"`` only: samples each output sees (``>= stride``); default ``2 * stride``.

    State (``"conv"``): the last ``kernel_size - stride`` input samples ``(B, kernel_size - stride, d_input)``.
    """

    def __init__(self, d_input: int, d_model: int, kind: Literal["patch", "conv"] = "conv", stride: int = 4,
                 kernel_size: int | None = None):
        super().__init__()
        kernel_size = stride if kind == "patch" else (kernel_size or 2 * stride)
        if stride < 1 or kernel_size < stride:
            raise ValueError(f"front end: need stride >= 1 and kernel_size >= stride, got {stride} and {kernel_size}")
        self.kind, self.stride, self.history = kind, stride, kernel_size - stride
        self.proj = nn.Conv1d(d_input, d_model, kernel_size, stride=stride)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid input lengths (B,) -> valid output positions (B,): ``ceil(lengths / stride)``."""
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d_input) -> (B, ceil(L / stride), d_model)."""
        y, _ = self.forward_chunk(x, self.initial_state(x.shape[0], x.device, x.dtype))
        return y

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(batch_size, self.history, self.proj.in_channels, device=device, dtype=dtype)

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_input), the previous samples -> (B, ceil(T / stride), d_model), the new state."""
        pad = -x.shape[1] % self.stride
        framed = torch.cat([state, F.pad(x, (0, 0, 0, pad))], dim=1)
        y = self.proj(framed.transpose(1, 2)).transpose(1, 2)
        new_state = framed[:, framed.shape[1] - self.history:]
        return (F.gelu(y) if self.kind == "conv" else y), new_state

    def step(self, frame: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame (B, stride, d_input) -> one position (B, d_model), the new state."""
        y, state = self.forward_chunk(frame, state)
        return y.squeeze(1), state
