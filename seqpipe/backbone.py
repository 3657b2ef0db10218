"""The backbone: input layer, a stack of pre-norm residual sequence blocks, a final norm."""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from seqpipe.contracts import InputSpec, TokenInput
from seqpipe.errors import ConfigError
from seqpipe.frontend import StridedFrontEnd
from seqpipe.mamba import MambaBlock
from seqpipe.streaming import StreamingModule

BlockFactory = Callable[[int], StreamingModule]


class ResidualBlock(StreamingModule):
    """``x + mixer(RMSNorm(x))`` with the streaming protocol of the mixer."""

    def __init__(self, d_model: int, mixer: StreamingModule, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.RMSNorm(d_model)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x), lengths))

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32):
        return self.mixer.initial_state(batch_size, device, dtype)

    def forward_chunk(self, x: torch.Tensor, state):
        y, state = self.mixer.forward_chunk(self.norm(x), state)
        return x + self.dropout(y), state

    def step(self, x_t: torch.Tensor, state):
        y, state = self.mixer.step(self.norm(x_t), state)
        return x_t + self.dropout(y), state


class Backbone(StreamingModule):
    """Token embedding or input projection -> ``n_layers`` pre-norm residual blocks -> final RMSNorm.

    Args:
        d_model: channels of the residual stream.
        n_layers: number of residual blocks.
        block: builds one sequence mixer from ``d_model`` — a block class such as
            :class:`~seqpipe.mamba.MambaBlock` or :class:`~seqpipe.s4.S4Block`, configured in YAML with
            ``class_path``/``init_args`` (every argument but ``d_model``); from Python, the class or
            ``functools.partial(MambaBlock, d_state=8)`` (called once per layer), not a block instance.
        dropout: dropout on each block's output, before the residual sum.
        vocab_size: token inputs ``x (B, L)`` of ids in ``[0, vocab_size)``, id 0 being padding.
        d_input: real-valued inputs ``x (B, L, d_input)``.
            Leave both unset to have the model set them from the data (:meth:`set_input`).
        frontend: input layer of real-valued inputs: ``"linear"`` (one position per input step), or a
            learned front end that shortens the sequence by ``stride`` (raw audio): ``"patch"``, ``"conv"``
            or ``"filterbank"`` (a learned log-mel spectrogram; :class:`~seqpipe.frontend.StridedFrontEnd`).
            Features then have ``ceil(L / stride)`` positions and :meth:`output_lengths` maps input lengths
            to them; streaming takes chunks whose sizes are multiples of ``stride`` and steps of one frame
            ``(B, stride, d_input)``.
        stride: input steps per position for the strided front ends.
        frontend_kernel: ``"conv"``/``"filterbank"``: input steps each position sees (default ``2 * stride``).
        frontend_filters: ``"filterbank"`` only: number of complex filters.
        sample_rate: ``"filterbank"`` only: the input's sample rate (Hz), which places the mel-spaced
            filters; given with ``d_input``, or left unset with it to have the model set both from the data.

    ``forward(x, lengths) -> (B, L, d_model)``; the streaming protocol threads one state per block.
    """

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 4,
        block: BlockFactory = MambaBlock,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        d_input: int | None = None,
        frontend: Literal["linear", "patch", "conv", "filterbank"] = "linear",
        stride: int = 1,
        frontend_kernel: int | None = None,
        frontend_filters: int = 40,
        sample_rate: float | None = None,
    ):
        super().__init__()
        self.d_model = d_model
        self.frontend, self.stride, self.frontend_kernel = frontend, stride, frontend_kernel
        self.frontend_filters = frontend_filters
        self.encoder: nn.Module | None = None
        if sample_rate is not None and d_input is None:
            raise ConfigError("Backbone: sample_rate goes with d_input; give both, or neither to take them from the data")
        if vocab_size is not None or d_input is not None:
            self.set_input(vocab_size=vocab_size, d_input=d_input, sample_rate=sample_rate)
        if isinstance(block, nn.Module):
            raise ConfigError(f"Backbone: block is built once per layer from d_model, so give its class or a "
                              f"functools.partial of it, not a {type(block).__name__} instance")
        self.layers = nn.ModuleList(ResidualBlock(d_model, block(d_model), dropout) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model)

    def set_input(self, vocab_size: int | None = None, d_input: int | None = None, sample_rate: float | None = None) -> None:
        """Create the input layer: an embedding for token ids, or a linear projection or strided front end for
        real values (``sample_rate``: of those values, used by the ``"filterbank"`` front end only)."""
        if (vocab_size is None) == (d_input is None):
            raise ConfigError("Backbone input: give exactly one of vocab_size (token ids) or d_input (real values)")
        if vocab_size and self.frontend != "linear":
            raise ConfigError(f"Backbone input: the {self.frontend!r} front end takes real values (d_input), not token ids")
        if self.frontend != "linear":
            self.encoder = StridedFrontEnd(d_input, self.d_model, self.frontend, self.stride, self.frontend_kernel,
                                           self.frontend_filters, sample_rate)
        else:
            self.encoder = nn.Embedding(vocab_size, self.d_model, padding_idx=0) if vocab_size else nn.Linear(d_input, self.d_model)

    @property
    def steps_per_output(self) -> int:
        """``stride`` with a strided front end, else 1 (:attr:`StreamingModule.steps_per_output`)."""
        return 1 if self.frontend == "linear" else self.stride

    def output_lengths(self, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """Valid input lengths (B,) -> valid feature positions (B,) (shorter after a strided front end)."""
        if lengths is None or not isinstance(self.encoder, StridedFrontEnd):
            return lengths
        return self.encoder.output_lengths(lengths)

    def _encode_chunk(self, x: torch.Tensor, state, step: bool):
        """The streaming input layer: ``(h, new_state, layer_states)``; a front end keeps its state in ``state[0]``."""
        if isinstance(self.encoder, StridedFrontEnd):
            h, input_state = (self.encoder.step if step else self.encoder.forward_chunk)(x, state[0])
            return h, [input_state], state[1:]
        return self._encode(x), [], state

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("Backbone has no input layer yet: pass vocab_size or d_input, or call set_input()")
        return self.encoder(x)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L) token ids or (B, L, d_input) -> features (B, L, d_model)."""
        h, lengths = self._encode(x), self.output_lengths(lengths)
        for layer in self.layers:
            h = layer(h, lengths)
        return self.norm(h)

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32):
        states = [layer.initial_state(batch_size, device, dtype) for layer in self.layers]
        if isinstance(self.encoder, StridedFrontEnd):
            states.insert(0, self.encoder.initial_state(batch_size, device, dtype))
        return states

    def forward_chunk(self, x: torch.Tensor, state):
        """x (B, T) or (B, T, d_input), per-block states -> features (B, T, d_model), new states."""
        h, new_state, state = self._encode_chunk(x, state, step=False)
        for layer, layer_state in zip(self.layers, state):
            h, layer_state = layer.forward_chunk(h, layer_state)
            new_state.append(layer_state)
        return self.norm(h), new_state

    def step(self, x_t: torch.Tensor, state):
        """x_t (B,) token ids, (B, d_input), or one frame (B, stride, d_input) after a front end -> (B, d_model), new states."""
        h, new_state, state = self._encode_chunk(x_t, state, step=True)
        for layer, layer_state in zip(self.layers, state):
            h, layer_state = layer.step(h, layer_state)
            new_state.append(layer_state)
        return self.norm(h), new_state


def position_reading_ahead(backbone: nn.Module, spec: InputSpec, length: int = 64) -> int | None:
    """The first output position of ``backbone`` that changes when only the last step of its input does (the
    backbone reads later positions: bidirectional, reverse-complement), or None when none does (causal).

    Probed in eval mode, without gradients, on two inputs of ``length`` steps of ``spec`` that differ in their last
    step; a change below 1e-4 of the features' largest value is rounding (an FFT convolution's), not reading.
    """
    generator = torch.Generator().manual_seed(0)
    if isinstance(spec, TokenInput):
        x = torch.randint(1, spec.vocab_size, (1, length), generator=generator).repeat(2, 1)
        x[1, -1] = x[0, -1] % (spec.vocab_size - 1) + 1  # another token, not the padding id 0
    else:
        x = torch.randn(1, length, spec.channels, generator=generator).repeat(2, 1, 1)
        x[1, -1] += 1
    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            features = backbone(x.to(next(backbone.parameters()).device)).float()  # (2, P, D)
    finally:
        backbone.train(training)
    change = (features[0, :-1] - features[1, :-1]).abs().amax(-1)  # (P - 1,): every output but the last
    ahead = torch.nonzero(change > 1e-4 * features.abs().amax())
    return int(ahead[0]) if len(ahead) else None
