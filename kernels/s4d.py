"""Diagonal S4 (S4D): initialisations, discretisation, and the Vandermonde kernel.

A diagonal SSM with complex diagonal ``A`` (H, N) keeps one state of each conjugate pair, so the real
system of size 2N is read out as ``y = 2 Re(C x)``. Discretised with step Δ (per channel):

    zoh:       Ā = exp(ΔA)                    B̄ = (exp(ΔA) - 1) / A · B
    bilinear:  Ā = (1 + ΔA/2) / (1 - ΔA/2)     B̄ = Δ B / (1 - ΔA/2)
    recurrence x_t = Ā x_{t-1} + B̄ u_t,    y_t = 2 Re(C x_t),    kernel K_l = 2 Re(C Ā^l B̄)

The kernel is a Vandermonde product ``K_l = 2 Re Σ_n W_n z_n^l`` with ``W = C B̄`` and ``log z = log Ā``;
:func:`vandermonde` computes it in L-chunks (CPU) or with Triton (GPU) and never holds an (H, N, L) tensor,
in the forward or the backward pass.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

from seqpipe.kernels.backends import resolve_backend
from seqpipe.kernels.fftconv import fft_conv

Init = Literal["legs", "lin", "inv"]
Disc = Literal["zoh", "bilinear"]
CHUNK_ELEMENTS = 1 << 21  # complex elements per (rows, N, chunk) block: ~16 MiB in complex64


def hippo_legs_normal(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS ``A = S - P Pᵀ`` with ``S`` normal, in the eigenbasis of ``S``; complex128, float64 math.

    Returns ``(Λ (N,), V (N, N) unitary, P̃ = V* P (N,), B̃ = V* B (N,))`` with ``S = V diag(Λ) V*``,
    eigenvalues sorted so that the first N/2 have positive imaginary part (one of each conjugate pair).
    """
    n = torch.arange(N, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    skew = 0.5 * root[:, None] * root[None, :]
    skew = torch.tril(-skew, -1) + torch.triu(skew, 1)  # S + I/2: antisymmetric
    mu, V = torch.linalg.eigh(1j * skew.to(torch.complex128))  # i·skew is Hermitian: V is unitary
    order = torch.argsort(mu)  # mu < 0 first: eigenvalue -i mu has positive imaginary part
    mu, V = mu[order], V[:, order]
    Lambda = -0.5 - 1j * mu.to(torch.complex128)
    P = torch.sqrt(n + 0.5).to(torch.complex128)
    B = root.to(torch.complex128)
    return Lambda, V, V.conj().T @ P, V.conj().T @ B


def diag_init(init: Init, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``(A (N,), B (N,))`` complex128 for N kept states (a real system of size 2N).

    ``legs``: the diagonal (normal) part of HiPPO-LegS and B in its eigenbasis (S4D-LegS);
    ``lin``: ``A_n = -1/2 + iπn``, B = 1; ``inv``: ``A_n = -1/2 + i(2N/π)(2N/(2n+1) - 1)``, B = 1.
    """
    n = torch.arange(N, dtype=torch.float64)
    if init == "legs":
        Lambda, _, _, B = hippo_legs_normal(2 * N)
        return Lambda[:N], B[:N]
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = (2 * N / math.pi) * (2 * N / (2 * n + 1) - 1)
    else:
        raise ValueError(f"S4 init must be one of 'legs', 'lin', 'inv', got {init!r}")
    return torch.complex(torch.full_like(n, -0.5), imag), torch.ones(N, dtype=torch.complex128)


def log_uniform_dt(H: int, dt_min: float, dt_max: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """log Δ (H,) drawn uniformly in [log dt_min, log dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"S4: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, generator=generator, dtype=torch.float64)
    return (u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).float()


class DiagonalSSM(NamedTuple):
    """A discretised diagonal SSM: ``dA``, ``log_dA``, ``dB`` all (H, N) complex."""

    dA: torch.Tensor
    log_dA: torch.Tensor
    dB: torch.Tensor


def discretize_diag(A: torch.Tensor, B: torch.Tensor, log_dt: torch.Tensor, disc: Disc) -> DiagonalSSM:
    """A (H, N), B (H, N) complex, log_dt (H,) -> :class:`DiagonalSSM`; the one discretisation of S4D."""
    dtA = A * torch.exp(log_dt)[:, None]
    if disc == "zoh":
        dA = torch.exp(dtA)
        return DiagonalSSM(dA, dtA, torch.expm1(dtA) / A * B)
    if disc == "bilinear":
        half = dtA / 2
        dA = (1 + half) / (1 - half)
        return DiagonalSSM(dA, torch.log(dA), B * torch.exp(log_dt)[:, None] / (1 - half))
    raise ValueError(f"S4 disc must be 'zoh' or 'bilinear', got {disc!r}")


def vandermonde_ref(W: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
    """``K[..., l] = 2 Re Σ_n W[..., n] exp(l log_z[..., n])`` in complex128; holds (..., N, L). W, log_z (..., N)."""
    W, log_z = torch.broadcast_tensors(W.to(torch.complex128), log_z.to(torch.complex128))
    l = torch.arange(length, device=W.device, dtype=torch.float64)
    return 2 * (W.unsqueeze(-1) * torch.exp(log_z.unsqueeze(-1) * l)).sum(-2).real


def chunk_length(rows: int, N: int) -> int:
    """Steps per chunk so that a (rows, N, steps) complex block stays within CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // max(1, rows * N))


def power_block(length: int, rows: int, N: int) -> int:
    """Steps T of the (rows, N, T) block of powers ``z^j`` with which ``length`` steps are covered as ``z^{cT} z^j``:
    about sqrt(length), the fewest complex exps (rows N (T + length / T)), within :func:`chunk_length`."""
    return min(chunk_length(rows, N), math.isqrt(length - 1) + 1)


def _powers(log_z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """z^l for l in [start, stop): (M, N) -> (M, N, stop - start)."""
    l = torch.arange(start, stop, device=log_z.device, dtype=log_z.real.dtype)
    return torch.exp(log_z.unsqueeze(-1) * l)


class _ChunkedVandermonde(torch.autograd.Function):
    """Vandermonde product as one batched matmul over blocks of T steps: with ``l = cT + j``,
    ``z^l = z^{cT} z^j``, so ``K[:, c, j] = 2 Re Σ_n (W z^{cT})_n (z^j)_n`` — rows (H, L/T, N) times one
    (H, N, T) block of powers (:func:`power_block`: T about sqrt(L)). Memory O(H N (T + L/T) + H L); no complex exp
    per (n, l) pair.

    Backward in the same form, with ``E_l = z^l`` and upstream grad ``g``: ``∂/∂W = 2 Σ_l g_l conj(E_l)``
    and ``∂/∂log z = 2 conj(W) Σ_l g_l l conj(E_l)`` (PyTorch's conjugate-Wirtinger convention).
    """

    @staticmethod
    def _blocks(log_z: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z^j for j < T (M, N, T), z^{cT} for c < L/T (M, C, N), block starts cT (C,))."""
        M, N = log_z.shape
        block = power_block(length, M, N)
        starts = torch.arange(0, length, block, device=log_z.device, dtype=log_z.real.dtype)
        return _powers(log_z, 0, block), torch.exp(log_z.unsqueeze(1) * starts[:, None]), starts

    @staticmethod
    def forward(ctx, W: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
        ctx.save_for_backward(W, log_z)
        powers, block_starts, _ = _ChunkedVandermonde._blocks(log_z, length)
        K = 2 * torch.bmm(W.unsqueeze(1) * block_starts, powers).real  # (M, C, T)
        return K.reshape(W.shape[0], -1)[:, :length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_K: torch.Tensor):
        W, log_z = ctx.saved_tensors
        M, length = grad_K.shape
        powers, block_starts, starts = _ChunkedVandermonde._blocks(log_z, length)
        C, T = block_starts.shape[1], powers.shape[-1]
        g = torch.nn.functional.pad(grad_K, (0, C * T - length)).reshape(M, C, T).to(W.dtype)
        j = torch.arange(T, device=W.device, dtype=grad_K.dtype)
        conj_powers = powers.conj().transpose(1, 2)  # (M, T, N)
        by_block = torch.bmm(g, conj_powers)  # Σ_j g conj(z^j): (M, C, N)
        by_block_j = torch.bmm(g * j, conj_powers)  # Σ_j j g conj(z^j)
        conj_starts = block_starts.conj()
        sum_g = (conj_starts * by_block).sum(1)
        sum_lg = (conj_starts * (starts[:, None] * by_block + by_block_j)).sum(1)
        return 2 * sum_g, 2 * W.conj() * sum_lg, None


def vandermonde_chunked(W: torch.Tensor, log_z: torch.Tensor, length: int) -> torch.Tensor:
    """Same as :func:`vandermonde_ref` in W's precision, in L-chunks of bounded memory (forward and backward)."""
    W, log_z = torch.broadcast_tensors(W, log_z.to(W.dtype))
    lead = W.shape[:-1]
    K = _ChunkedVandermonde.apply(W.reshape(-1, W.shape[-1]), log_z.reshape(-1, W.shape[-1]), length)
    return K.reshape(*lead, length)


def vandermonde(W: torch.Tensor, log_z: torch.Tensor, length: int, backend: str = "auto") -> torch.Tensor:
    """``K[..., l] = 2 Re Σ_n W[..., n] z[..., n]^l`` for l < length; W, log_z (..., N) complex broadcastable.

    ``backend``: "ref" (complex128, holds (..., N, L)), "chunked" (CPU), "triton" (GPU, or CPU under
    ``TRITON_INTERPRET=1``), "auto". Returns a real tensor (..., length) in W's real precision.
    """
    if not (W.is_complex() and log_z.is_complex()):
        raise ValueError(f"vandermonde: W and log_z must be complex, got {W.dtype} and {log_z.dtype}")
    chosen = resolve_backend(backend, W, "vandermonde", "W")
    if chosen == "ref":
        return vandermonde_ref(W, log_z, length).to(W.real.dtype)
    if chosen == "triton":
        from seqpipe.kernels.s4_triton import vandermonde_triton

        return vandermonde_triton(W, log_z, length)
    return vandermonde_chunked(W, log_z, length)


def s4d_kernel(
    C: torch.Tensor, ssm: DiagonalSSM, length: int, backend: str = "auto"
) -> torch.Tensor:
    """S4D convolution kernel: C (..., H, N) complex, a discretised SSM (H, N) -> K (..., H, length) real."""
    return vandermonde(C * ssm.dB, ssm.log_dA, length, backend)


def diag_state_response(u: torch.Tensor, ssm: DiagonalSSM) -> torch.Tensor:
    """State reached from zero after a chunk: ``Σ_s Ā^{T-1-s} B̄ u_s``; u (B, H, T) real -> (B, H, N) complex.

    The transpose of :class:`_ChunkedVandermonde`: with ``j = cT' + i`` steps back from the end,
    ``Ā^j = Ā^{cT'} Ā^i``, so the sum is real matmuls of u's blocks (B, H, C, T') with one (H, N, T') block of
    powers, then a weighted sum over the C block starts; no complex exp per (n, s) pair.
    """
    H, N = ssm.dA.shape
    T = u.shape[-1]
    block = power_block(T, H, N)
    n_blocks = -(-T // block)
    u_rev = torch.nn.functional.pad(u.flip(-1), (0, n_blocks * block - T)).reshape(*u.shape[:2], n_blocks, block)
    powers = _powers(ssm.log_dA, 0, block)  # (H, N, T'): Ā^i
    u_rev = u_rev.to(powers.real.dtype)
    by_block = torch.complex(torch.einsum("bhci,hni->bhcn", u_rev, powers.real),
                             torch.einsum("bhci,hni->bhcn", u_rev, powers.imag))
    starts = torch.arange(n_blocks, device=u.device, dtype=powers.real.dtype) * block
    block_starts = torch.exp(ssm.log_dA[:, None, :] * starts[:, None])  # (H, C, N): Ā^{cT'}
    return (by_block * block_starts).sum(2) * ssm.dB


def diag_ssm_chunk(
    u: torch.Tensor, state: torch.Tensor, C: torch.Tensor, ssm: DiagonalSSM, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One streamed chunk: u (B, H, T) real, state (B, H, N), C (H, N) -> (y (B, H, T) without D, new state).

    ``y_t = Σ_{s≤t} K_{t-s} u_s + 2 Re(C Ā^{t+1} x)``, ``x' = Ā^T x + Σ_s Ā^{T-1-s} B̄ u_s``: exact.
    """
    T = u.shape[-1]
    y = fft_conv(u, s4d_kernel(C, ssm, T, backend))
    y = y + vandermonde(C * ssm.dA * state, ssm.log_dA, T, backend).to(y.dtype)
    return y, torch.exp(ssm.log_dA * T) * state + diag_state_response(u, ssm)


def diag_ssm_step(u_t: torch.Tensor, state: torch.Tensor, C: torch.Tensor, ssm: DiagonalSSM) -> tuple[torch.Tensor, torch.Tensor]:
    """u_t (B, H), state (B, H, N) -> (y_t (B, H) without D, next state); O(H N)."""
    state = ssm.dA * state + ssm.dB * u_t.unsqueeze(-1)
    return 2 * (C * state).sum(-1).real, state
