"""Causal depthwise 1-D convolution with a carried state (Mamba's short convolution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution: ``y[:, d, t] = sum_k weight[d, k] * x[:, d, t - K + 1 + k] + bias[d]``.

    Args:
        x: (B, D, L) input.
        weight: (D, K) one filter per channel.
        bias: (D,) or None.
        initial_state: (B, D, K-1), the K-1 inputs preceding ``x`` (zeros when None).
        return_final_state: also return the last K-1 inputs, the state for the next call.

    Returns:
        y (B, D, L) [, final_state (B, D, K-1)].
    """
    batch, dim, _ = x.shape
    kernel_size = weight.shape[-1]
    if initial_state is None:
        initial_state = x.new_zeros(batch, dim, kernel_size - 1)
    padded = torch.cat([initial_state.to(x.dtype), x], dim=-1)
    y = F.conv1d(padded, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype), groups=dim)
    if return_final_state:
        # a copy: a view would keep the whole padded chunk alive as long as the carried state
        return y, padded[..., padded.shape[-1] - (kernel_size - 1) :].clone()
    return y


def causal_conv1d_step(
    x_t: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of :func:`causal_conv1d`.

    Args:
        x_t: (B, D) the new input.
        state: (B, D, K-1) the previous K-1 inputs.

    Returns:
        y_t (B, D), new state (B, D, K-1).
    """
    window = torch.cat([state.to(x_t.dtype), x_t.unsqueeze(-1)], dim=-1)
    y_t = (window * weight.to(x_t.dtype)).sum(-1)
    if bias is not None:
        y_t = y_t + bias.to(x_t.dtype)
    return y_t, window[..., 1:]
