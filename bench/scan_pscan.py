"""Baseline for bench/scan.py: a Blelloch parallel scan in plain PyTorch, as in popular pure-PyTorch Mamba ports.

It materialises (B, D, L, N) tensors (decays, inputs, states, and their gradients): the memory cost our
chunked backend avoids. L must be a power of two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _blelloch_(a: torch.Tensor, b: torch.Tensor) -> None:
    """In place over (B, D, L, N): b_t <- a_t * b_{t-1} + b_t (inclusive scan); a is clobbered."""
    batch, dim, length, d_state = a.shape
    levels = length.bit_length() - 1
    up_a, up_b = a, b
    for _ in range(levels):  # up-sweep: each right element absorbs its left neighbour
        pairs_a = up_a.view(batch, dim, -1, 2, d_state)
        pairs_b = up_b.view(batch, dim, -1, 2, d_state)
        pairs_b[:, :, :, 1].addcmul_(pairs_a[:, :, :, 1], pairs_b[:, :, :, 0])
        pairs_a[:, :, :, 1].mul_(pairs_a[:, :, :, 0])
        up_a, up_b = pairs_a[:, :, :, 1], pairs_b[:, :, :, 1]
    for level in range(levels - 2, -1, -1):  # down-sweep: fill in the prefixes skipped above
        stride = 1 << level
        pairs_a = a[:, :, stride - 1 :: stride].view(batch, dim, -1, 2, d_state)
        pairs_b = b[:, :, stride - 1 :: stride].view(batch, dim, -1, 2, d_state)
        pairs_b[:, :, 1:, 0].addcmul_(pairs_a[:, :, 1:, 0], pairs_b[:, :, :-1, 1])
        pairs_a[:, :, 1:, 0].mul_(pairs_a[:, :, :-1, 1])


class _PScan(torch.autograd.Function):
    """h_t = a_t * h_{t-1} + b_t over (B, D, L, N), with a reverse pscan for the backward."""

    @staticmethod
    def forward(ctx, a, b):
        h = b.clone()
        _blelloch_(a.clone(), h)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        # lam_t = a_{t+1} lam_{t+1} + grad_t, run forward on the time-reversed sequence
        a_next = F.pad(a[:, :, 1:], (0, 0, 0, 1)).flip(2)
        lam = grad_h.flip(2).contiguous()
        _blelloch_(a_next.contiguous(), lam)
        lam = lam.flip(2)
        h_prev = F.pad(h[:, :, :-1], (0, 0, 1, 0))
        return lam * h_prev, lam


def selective_scan_pscan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan (B, N, L) B/C only, shapes as in seqpipe.kernels.selective_scan, via a Blelloch pscan."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    dt = F.softplus(delta) if delta_softplus else delta
    decay = torch.exp(dt.unsqueeze(-1) * A[:, None, :])  # (B, D, L, N)
    inputs = (dt * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)
    states = _PScan.apply(decay, inputs)
    y = (states * C.transpose(1, 2).unsqueeze(1)).sum(-1)
    if D is not None:
        y = y + u * D[:, None]
    return y * F.silu(z) if z is not None else y
