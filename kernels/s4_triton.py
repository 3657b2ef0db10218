"""Triton Vandermonde product for S4D kernels on GPU (or on CPU under ``TRITON_INTERPRET=1``).

``K[m, l] = 2 Re Σ_n W[m, n] exp(l · log_z[m, n])``, written with real arithmetic:
``Re(W z^l) = e^{l Re a} (Re W cos(l Im a) - Im W sin(l Im a))``. The forward program owns a block of
l and loops over n; the backward program owns a block of n and loops over l, accumulating
``S1 = Σ_l g_l conj(z^l)`` and ``S2 = Σ_l l g_l conj(z^l)``. Neither holds more than a (BLOCK_N, BLOCK_L)
tile, so memory is O(M (N + L)). Math in float32.

This module imports triton at import time; :func:`seqpipe.kernels.s4.vandermonde` imports it lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 16
BLOCK_L = 64


@triton.jit
def _vandermonde_forward(W_re, W_im, a_re, a_im, K, N, L, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)
    l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_float = l.to(tl.float32)
    acc = tl.zeros([BLOCK_L], dtype=tl.float32)
    n_start = 0
    while n_start < N:  # a while loop: the interpreter's range() over a runtime bound fails with NumPy ≥ 2.4
        n = n_start + tl.arange(0, BLOCK_N)
        mask = n < N
        w_re = tl.load(W_re + row * N + n, mask=mask, other=0.0)
        w_im = tl.load(W_im + row * N + n, mask=mask, other=0.0)
        decay = tl.load(a_re + row * N + n, mask=mask, other=0.0)
        freq = tl.load(a_im + row * N + n, mask=mask, other=0.0)
        magnitude = tl.exp(decay[:, None] * l_float[None, :])
        phase = freq[:, None] * l_float[None, :]
        acc += tl.sum(magnitude * (w_re[:, None] * tl.cos(phase) - w_im[:, None] * tl.sin(phase)), axis=0)
        n_start += BLOCK_N
    tl.store(K + row * L + l, 2.0 * acc, mask=l < L)


@triton.jit
def _vandermonde_backward(G, a_re, a_im, S1_re, S1_im, S2_re, S2_im, N, L, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = n < N
    decay = tl.load(a_re + row * N + n, mask=mask, other=0.0)
    freq = tl.load(a_im + row * N + n, mask=mask, other=0.0)
    s1_re = tl.zeros([BLOCK_N], dtype=tl.float32)
    s1_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    s2_re = tl.zeros([BLOCK_N], dtype=tl.float32)
    s2_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    l_start = 0
    while l_start < L:
        l = l_start + tl.arange(0, BLOCK_L)
        l_float = l.to(tl.float32)
        g = tl.load(G + row * L + l, mask=l < L, other=0.0)
        magnitude = tl.exp(decay[:, None] * l_float[None, :]) * g[None, :]
        phase = freq[:, None] * l_float[None, :]
        cos_part = magnitude * tl.cos(phase)
        sin_part = magnitude * tl.sin(phase)
        s1_re += tl.sum(cos_part, axis=1)
        s1_im -= tl.sum(sin_part, axis=1)
        s2_re += tl.sum(cos_part * l_float[None, :], axis=1)
        s2_im -= tl.sum(sin_part * l_float[None, :], axis=1)
        l_start += BLOCK_L
    tl.store(S1_re + row * N + n, s1_re, mask=mask)
    tl.store(S1_im + row * N + n, s1_im, mask=mask)
    tl.store(S2_re + row * N + n, s2_re, mask=mask)
    tl.store(S2_im + row * N + n, s2_im, mask=mask)


def _parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.real.float().contiguous(), x.imag.float().contiguous()


class _TritonVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
        ctx.save_for_backward(W, log_z)
        M, N = W.shape
        K = torch.empty(M, length, device=W.device, dtype=torch.float32)
        grid = (M, triton.cdiv(length, BLOCK_L))
        _vandermonde_forward[grid](*_parts(W), *_parts(log_z), K, N, length, BLOCK_N=BLOCK_N, BLOCK_L=BLOCK_L)
        return K.to(W.real.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_K: torch.Tensor):
        W, log_z = ctx.saved_tensors
        M, N = W.shape
        length = grad_K.shape[-1]
        sums = [torch.empty(M, N, device=W.device, dtype=torch.float32) for _ in range(4)]
        grid = (M, triton.cdiv(N, BLOCK_N))
        _vandermonde_backward[grid](
            grad_K.float().contiguous(), *_parts(log_z), *sums, N, length, BLOCK_N=BLOCK_N, BLOCK_L=BLOCK_L
        )
        S1 = torch.complex(sums[0], sums[1]).to(W.dtype)
        S2 = torch.complex(sums[2], sums[3]).to(W.dtype)
        return 2 * S1, 2 * W.conj() * S2, None


def vandermonde_triton(W: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
    """Same contract as :func:`seqpipe.kernels.s4.vandermonde_ref`, computed by Triton in float32."""
    W, log_z = torch.broadcast_tensors(W, log_z.to(W.dtype))
    lead = W.shape[:-1]
    N = W.shape[-1]
    K = _TritonVandermonde.apply(W.reshape(-1, N), log_z.reshape(-1, N), length)
    return K.reshape(*lead, length)
