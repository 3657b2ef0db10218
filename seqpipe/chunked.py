"""Running a streaming module over a long sequence chunk by chunk, with carried state.

Activations of one chunk at a time are alive in the forward pass; with ``checkpoint=True`` only each
chunk's input and carried state are kept for the backward pass, and the chunk is recomputed there
(``torch.utils.checkpoint``), so training memory grows with the number of chunks times the state size, not
with L times the activations of every layer.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as checkpoint_call

from seqpipe.errors import ConfigError
from seqpipe.streaming import State, StreamingModule


def check_chunk_size(module: StreamingModule, chunk_size: int, option: str = "chunk_size") -> None:
    """Refuse a ``chunk_size`` that is not positive or, for a strided front end (``module.steps_per_output`` input
    steps per output), not a multiple of the stride: a chunk ending inside a frame would be padded mid-sequence."""
    stride = module.steps_per_output
    if chunk_size < 1 or chunk_size % stride:
        need = "positive" if stride == 1 else f"a positive multiple of the front end's stride {stride}"
        raise ConfigError(f"{option} must be {need}, got {chunk_size}")


def chunked_forward(
    module: StreamingModule,
    x: torch.Tensor,
    chunk_size: int,
    checkpoint: bool = False,
    state: State | None = None,
) -> tuple[torch.Tensor, State]:
    """x (B, L, ...) -> (y (B, L, D), the state after the last chunk), via ``forward_chunk`` on chunks of
    ``chunk_size`` positions. ``state``: where to continue from (default: the module's initial state).

    Equal to ``module(x)`` for a causal module (the streaming invariant); right padding is harmless there
    because nothing flows backwards from it.
    """
    check_chunk_size(module, chunk_size)
    if state is None:
        dtype = x.dtype if x.is_floating_point() else next(module.parameters()).dtype
        state = module.initial_state(x.shape[0], x.device, dtype)
    outputs = []
    for start in range(0, x.shape[1], chunk_size):
        chunk = x[:, start:start + chunk_size]
        if checkpoint and torch.is_grad_enabled():
            y, state = checkpoint_call(module.forward_chunk, chunk, state, use_reentrant=False)
        else:
            y, state = module.forward_chunk(chunk, state)
        outputs.append(y)
    return torch.cat(outputs, dim=1), state


def valid_positions(lengths: torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Whether each of the positions start..stop-1 lies within each row's ``lengths`` (B,): (B, stop - start) bool."""
    return torch.arange(start, stop, device=device)[None, :] < lengths.to(device)[:, None]


def valid_mean(features: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """features (B, L, D), lengths (B,) or None (all positions valid) -> the mean over each row's valid positions
    (B, D), ignoring right padding: what :func:`chunked_mean` computes chunk by chunk."""
    if lengths is None:
        return features.mean(1)
    valid = valid_positions(lengths, 0, features.shape[1], features.device)
    return (features * valid[..., None]).sum(1) / lengths.to(features.device)[:, None].to(features.dtype)


def valid_max(features: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """features (B, L, D), lengths (B,) or None (all positions valid) -> the maximum over each row's valid positions
    (B, D), ignoring right padding: what :func:`chunked_mean_max` computes chunk by chunk."""
    if lengths is None:
        return features.amax(1)
    valid = valid_positions(lengths, 0, features.shape[1], features.device)
    return features.masked_fill(~valid[..., None], float("-inf")).amax(1)


def chunked_mean(module: StreamingModule, x: torch.Tensor, lengths: torch.Tensor | None, chunk_size: int) -> torch.Tensor:
    """x (B, L, ...) -> the mean of ``module``'s outputs over each row's valid output positions ``lengths`` (B,),
    (B, D), computed chunk by chunk with carried state. Without gradients the memory is that of one chunk,
    whatever L (predicting on a chromosome-sized record)."""
    return chunked_mean_max(module, x, lengths, chunk_size, with_max=False)[0]


def chunked_mean_max(module: StreamingModule, x: torch.Tensor, lengths: torch.Tensor | None, chunk_size: int,
                     with_max: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As :func:`chunked_mean`, and the maximum (B, D) over the same positions (None without ``with_max``)."""
    check_chunk_size(module, chunk_size)
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
    dtype = x.dtype if x.is_floating_point() else next(module.parameters()).dtype
    state = module.initial_state(x.shape[0], x.device, dtype)
    total, peak, position = None, None, 0  # position: of the outputs, which a strided front end makes fewer than the inputs
    for start in range(0, x.shape[1], chunk_size):
        y, state = module.forward_chunk(x[:, start:start + chunk_size], state)
        valid = valid_positions(lengths, position, position + y.shape[1], y.device)[..., None]
        part = (y * valid).sum(1)
        total, position = part if total is None else total + part, position + y.shape[1]
        if with_max:
            chunk_peak = y.masked_fill(~valid, float("-inf")).amax(1)
            peak = chunk_peak if peak is None else torch.maximum(peak, chunk_peak)
    return total / lengths.to(total.device)[:, None].to(total.dtype), peak
