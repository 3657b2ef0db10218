"""The streaming protocol every sequence block and backbone implements.

    forward(x[B, L, D], lengths=None)          -> y[B, L, D]
    initial_state(batch_size, device, dtype)   -> state
    forward_chunk(x[B, T, D], state)           -> (y[B, T, D], state)   continues where state left off
    step(x_t[B, D], state)                     -> (y_t[B, D], state)    one token, cost independent of L

Invariant (tested for every block): ``forward(x)`` equals the concatenation of ``forward_chunk`` over any
split of ``x``, and equals ``step`` applied token by token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seqpipe.errors import ConfigError

State = Any  # a tensor, or a tuple/list of tensors, owned by the block that made it


class StreamingModule(nn.Module):
    """Base class of blocks and backbones; subclasses implement the four protocol methods."""

    #: input steps per output position (a strided front end's stride); a chunk of a stream is a multiple of it
    steps_per_output = 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D), right-padded to ``lengths`` (B,; None: all valid) -> y (B, L, D), the whole sequence."""
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> State:
        """The state before the first token of ``batch_size`` sequences: what ``forward_chunk`` and ``step`` carry."""
        raise NotImplementedError

    def forward_chunk(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (B, T, D), the next T tokens after ``state`` -> (y (B, T, D), the state after them); over any split
        of a sequence into chunks, equal to ``forward`` of the whole."""
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Default: a chunk of one token. Blocks override it where a cheaper update exists."""
        y, state = self.forward_chunk(x_t.unsqueeze(1), state)
        return y.squeeze(1), state


def cannot_stream(module: nn.Module) -> ConfigError:
    """The error of a module that reads each window in both directions when asked to stream."""
    return ConfigError(
        f"{type(module).__name__} reads each window in both directions, so it cannot stream (chunk by chunk with its "
        "state carried: --chunk_size, --model.chunk_size, data.stream): run whole windows (a genome prediction with "
        "overlapping ones: data.predict_overlap)"
    )


class WholeWindowsOnly:
    """Mixin, listed before the :class:`StreamingModule` base, of modules that read each window in both
    directions: ``initial_state``, ``forward_chunk`` and ``step`` raise :func:`cannot_stream`'s error."""

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> State:
        raise cannot_stream(self)

    def forward_chunk(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise cannot_stream(self)


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark a parameter (A, Δ bias, D, ...) to be kept out of weight decay; the optimizer setup reads the mark."""
    param._no_weight_decay = True
    return param
