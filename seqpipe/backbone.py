"""The backbone: input layer, a stack of pre-norm residual sequence blocks, a final norm."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

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
            ``class_path``/``init_args`` (every argument but ``d_model``).
        dropout: dropout on each block's output, before the residual sum.
        vocab_size: token inputs ``x (B, L)`` of ids in ``[0, vocab_size)``, id 0 being padding.
        d_input: real-valued inputs ``x (B, L, d_input)``.
            Leave both unset to have the model set them from the data (:meth:`set_input`).

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
    ):
        super().__init__()
        self.d_model = d_model
        self.encoder: nn.Module | None = None
        if vocab_size is not None or d_input is not None:
            self.set_input(vocab_size=vocab_size, d_input=d_input)
        self.layers = nn.ModuleList(ResidualBlock(d_model, block(d_model), dropout) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model)

    def set_input(self, vocab_size: int | None = None, d_input: int | None = None) -> None:
        """Create the input layer: an embedding for token ids or a linear projection for real values."""
        if (vocab_size is None) == (d_input is None):
            raise ValueError("Backbone input: give exactly one of vocab_size (token ids) or d_input (real values)")
        self.encoder = nn.Embedding(vocab_size, self.d_model, padding_idx=0) if vocab_size else nn.Linear(d_input, self.d_model)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("Backbone has no input layer yet: pass vocab_size or d_input, or call set_input()")
        return self.encoder(x)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L) token ids or (B, L, d_input) -> features (B, L, d_model)."""
        h = self._encode(x)
        for layer in self.layers:
            h = layer(h, lengths)
        return self.norm(h)

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32):
        return [layer.initial_state(batch_size, device, dtype) for layer in self.layers]

    def forward_chunk(self, x: torch.Tensor, state):
        """x (B, T) or (B, T, d_input), per-block states -> features (B, T, d_model), new states."""
        h, new_state = self._encode(x), []
        for layer, layer_state in zip(self.layers, state):
            h, layer_state = layer.forward_chunk(h, layer_state)
            new_state.append(layer_state)
        return self.norm(h), new_state

    def step(self, x_t: torch.Tensor, state):
        """x_t (B,) token ids or (B, d_input) -> features (B, d_model), new states."""
        h, new_state = self._encode(x_t), []
        for layer, layer_state in zip(self.layers, state):
            h, layer_state = layer.step(h, layer_state)
            new_state.append(layer_state)
        return self.norm(h), new_state
