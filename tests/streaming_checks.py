"""Shared assertion of the streaming protocol invariant: forward = chunks = steps."""

from __future__ import annotations

import torch


def _initial_state(module, x: torch.Tensor, state_dtype: torch.dtype | None):
    """The module's initial state, float64 for float inputs unless ``state_dtype`` says otherwise."""
    if state_dtype is None:
        state_dtype = torch.float64 if x.is_floating_point() else torch.float32
    return module.initial_state(x.shape[0], x.device, state_dtype)


def run_chunks(module, x: torch.Tensor, split_points: list[int], state_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run ``module.forward_chunk`` over ``x`` (B, L, ...) cut at ``split_points``; concatenate along L."""
    state = _initial_state(module, x, state_dtype)
    bounds = [0, *split_points, x.shape[1]]
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        y, state = module.forward_chunk(x[:, start:end], state)
        outputs.append(y)
    return torch.cat(outputs, dim=1)


def run_steps(module, x: torch.Tensor, state_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run ``module.step`` token by token over ``x`` (B, L, ...); stack along L."""
    state = _initial_state(module, x, state_dtype)
    outputs = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1)


def assert_streaming_invariant(module, x: torch.Tensor, split_points: list[int], rtol: float = 1e-7) -> None:
    """forward(x) equals forward_chunk over the split and step token by token, to ``rtol`` of its scale."""
    module.eval()
    with torch.no_grad():
        full = module(x)
        chunked = run_chunks(module, x, split_points)
        stepped = run_steps(module, x)
    scale = full.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(chunked, full, rtol=0, atol=rtol * scale)
    torch.testing.assert_close(stepped, full, rtol=0, atol=rtol * scale)
