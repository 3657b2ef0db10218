"""Triton kernels for S4 on GPU (or on CPU under ``TRITON_INTERPRET=1``): the Vandermonde product of S4D and
the Cauchy product of S4-DPLR.

Vandermonde: ``K[m, l] = 2 Re Σ_n W[m, n] exp(l · log_z[m, n])``, written with real arithmetic:
``Re(W z^l) = e^{l Re a} (Re W cos(l Im a) - Im W sin(l Im a))``. The forward program owns a block of
l and loops over n; the backward program owns a block of n and loops over l, accumulating
``S1 = Σ_l g_l conj(z^l)`` and ``S2 = Σ_l l g_l conj(z^l)``.

Cauchy: ``k[r, h, f] = Σ_n V[r, h, n] c[h, n, f]`` with ``c = 2 / (2 (1 - ω_f) / Δ_h - λ_hn (1 + ω_f))``, the
bilinear generating function at the frequencies ω. The forward program owns a block of frequencies and loops
over n; the backward owns a block of n and loops over frequencies, using ``∂c/∂λ = c² (1 + ω) / 2`` and
``∂c/∂Δ = c² (1 - ω) / Δ²``.

No kernel holds more than a (BLOCK_N, BLOCK_L) tile, so memory is O(rows (N + L)). Math in float32.
This module imports triton at import time; :mod:`seqpipe.kernels.s4d` and :mod:`seqpipe.kernels.s4_dplr`
import it lazily.
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
    """Same contract as :func:`seqpipe.kernels.s4d.vandermonde_ref`, computed by Triton in float32."""
    W, log_z = torch.broadcast_tensors(W, log_z.to(W.dtype))
    lead = W.shape[:-1]
    N = W.shape[-1]
    K = _TritonVandermonde.apply(W.reshape(-1, N), log_z.reshape(-1, N), length)
    return K.reshape(*lead, length)


@triton.jit
def _complex_mul(a_re, a_im, b_re, b_im):
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


@triton.jit
def _cauchy_tile(lam_re, lam_im, dt, w_re, w_im):
    """c = 2 / (2 (1 - ω) / Δ - λ (1 + ω)) as a (BLOCK_N, BLOCK_L) tile: λ (BLOCK_N,), ω (BLOCK_L,), Δ scalar."""
    den_re = 2 * (1 - w_re[None, :]) / dt - (lam_re[:, None] * (1 + w_re[None, :]) - lam_im[:, None] * w_im[None, :])
    den_im = -2 * w_im[None, :] / dt - (lam_re[:, None] * w_im[None, :] + lam_im[:, None] * (1 + w_re[None, :]))
    scale = 2 / (den_re * den_re + den_im * den_im)
    return den_re * scale, -den_im * scale


@triton.jit
def _cauchy_forward(V_re, V_im, lam_re_ptr, lam_im_ptr, dt_ptr, w_re_ptr, w_im_ptr, out_re, out_im, H, N, F,
                    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)  # r * H + h
    h = row % H
    f = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_f = f < F
    w_re = tl.load(w_re_ptr + f, mask=mask_f, other=0.0)
    w_im = tl.load(w_im_ptr + f, mask=mask_f, other=0.0)
    dt = tl.load(dt_ptr + h)
    acc_re = tl.zeros([BLOCK_L], dtype=tl.float32)
    acc_im = tl.zeros([BLOCK_L], dtype=tl.float32)
    n_start = 0
    while n_start < N:
        n = n_start + tl.arange(0, BLOCK_N)
        mask = n < N
        v_re = tl.load(V_re + row * N + n, mask=mask, other=0.0)
        v_im = tl.load(V_im + row * N + n, mask=mask, other=0.0)
        # padding lanes get the pole λ = -1, which keeps the denominator away from 0 (Re > 0 on |ω| = 1)
        c_re, c_im = _cauchy_tile(tl.load(lam_re_ptr + h * N + n, mask=mask, other=-1.0),
                                  tl.load(lam_im_ptr + h * N + n, mask=mask, other=0.0), dt, w_re, w_im)
        term_re, term_im = _complex_mul(v_re[:, None], v_im[:, None], c_re, c_im)
        acc_re += tl.sum(term_re, axis=0)
        acc_im += tl.sum(term_im, axis=0)
        n_start += BLOCK_N
    tl.store(out_re + row * F + f, acc_re, mask=mask_f)
    tl.store(out_im + row * F + f, acc_im, mask=mask_f)


@triton.jit
def _cauchy_backward(G_re, G_im, V_re, V_im, lam_re_ptr, lam_im_ptr, dt_ptr, w_re_ptr, w_im_ptr, dV_re, dV_im,
                     dlam_re, dlam_im, ddt, H, N, F, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)
    h = row % H
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = n < N
    lam_re = tl.load(lam_re_ptr + h * N + n, mask=mask, other=-1.0)  # see _cauchy_forward
    lam_im = tl.load(lam_im_ptr + h * N + n, mask=mask, other=0.0)
    dt = tl.load(dt_ptr + h)
    # S0 = Σ_f g conj(c), S1 = Σ_f g conj(c² (1 + ω)), S2 = Σ_f g conj(c² (1 - ω))
    s0_re = tl.zeros([BLOCK_N], dtype=tl.float32)
    s0_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    s1_re = tl.zeros([BLOCK_N], dtype=tl.float32)
    s1_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    s2_re = tl.zeros([BLOCK_N], dtype=tl.float32)
    s2_im = tl.zeros([BLOCK_N], dtype=tl.float32)
    f_start = 0
    while f_start < F:
        f = f_start + tl.arange(0, BLOCK_L)
        mask_f = f < F
        w_re = tl.load(w_re_ptr + f, mask=mask_f, other=0.0)
        w_im = tl.load(w_im_ptr + f, mask=mask_f, other=0.0)
        g_re = tl.load(G_re + row * F + f, mask=mask_f, other=0.0)[None, :]
        g_im = tl.load(G_im + row * F + f, mask=mask_f, other=0.0)[None, :]
        c_re, c_im = _cauchy_tile(lam_re, lam_im, dt, w_re, w_im)
        c2_re, c2_im = _complex_mul(c_re, c_im, c_re, c_im)
        plus_re, plus_im = _complex_mul(c2_re, c2_im, 1 + w_re[None, :], w_im[None, :])
        minus_re, minus_im = _complex_mul(c2_re, c2_im, 1 - w_re[None, :], -w_im[None, :])
        term_re, term_im = _complex_mul(g_re, g_im, c_re, -c_im)
        s0_re += tl.sum(term_re, axis=1)
        s0_im += tl.sum(term_im, axis=1)
        term_re, term_im = _complex_mul(g_re, g_im, plus_re, -plus_im)
        s1_re += tl.sum(term_re, axis=1)
        s1_im += tl.sum(term_im, axis=1)
        term_re, term_im = _complex_mul(g_re, g_im, minus_re, -minus_im)
        s2_re += tl.sum(term_re, axis=1)
        s2_im += tl.sum(term_im, axis=1)
        f_start += BLOCK_L
    v_re = tl.load(V_re + row * N + n, mask=mask, other=0.0)
    v_im = tl.load(V_im + row * N + n, mask=mask, other=0.0)
    tl.store(dV_re + row * N + n, s0_re, mask=mask)
    tl.store(dV_im + row * N + n, s0_im, mask=mask)
    # dλ = conj(V) S1 / 2 and dΔ = Re(conj(V) S2) / Δ², per row; summed over rows by the caller
    grad_re, grad_im = _complex_mul(v_re, -v_im, s1_re, s1_im)
    tl.store(dlam_re + row * N + n, grad_re / 2, mask=mask)
    tl.store(dlam_im + row * N + n, grad_im / 2, mask=mask)
    grad_re, _ = _complex_mul(v_re, -v_im, s2_re, s2_im)
    tl.store(ddt + row * N + n, grad_re / (dt * dt), mask=mask)


class _TritonCauchy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, V: torch.Tensor, Lambda: torch.Tensor, dt: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        R, H, N = V.shape
        F = omega.shape[0]
        tensors = (*_parts(V), *_parts(Lambda), dt.float().contiguous(), *_parts(omega))
        ctx.save_for_backward(*tensors)
        ctx.dtypes = V.dtype, Lambda.dtype, dt.dtype
        out = [torch.empty(R, H, F, device=V.device, dtype=torch.float32) for _ in range(2)]
        _cauchy_forward[(R * H, triton.cdiv(F, BLOCK_L))](*tensors, *out, H, N, F, BLOCK_N=BLOCK_N, BLOCK_L=BLOCK_L)
        return torch.complex(*out).to(V.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        tensors = ctx.saved_tensors
        R, H, N = tensors[0].shape
        F = tensors[-1].shape[0]
        sums = [torch.empty(R, H, N, device=grad.device, dtype=torch.float32) for _ in range(5)]
        _cauchy_backward[(R * H, triton.cdiv(N, BLOCK_N))](
            *_parts(grad), *tensors, *sums, H, N, F, BLOCK_N=BLOCK_N, BLOCK_L=BLOCK_L
        )
        V_dtype, Lambda_dtype, dt_dtype = ctx.dtypes
        return (torch.complex(sums[0], sums[1]).to(V_dtype), torch.complex(sums[2], sums[3]).sum(0).to(Lambda_dtype),
                sums[4].sum((0, 2)).to(dt_dtype), None)


def cauchy_triton(V: torch.Tensor, Lambda: torch.Tensor, dt: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """``Σ_n V[r, h, n] · 2 / (2 (1 - ω_f) / Δ_h - Λ[h, n] (1 + ω_f))``: V (R, H, N), Λ (H, N) complex, Δ (H,)
    real, ω (F,) complex -> (R, H, F) in V's dtype, computed in float32; gradients for V, Λ and Δ."""
    return _TritonCauchy.apply(V, Lambda, dt, omega)
