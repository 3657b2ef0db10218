"""S4 with a diagonal-plus-low-rank state matrix: ``A = diag(Λ) - P P*`` (HiPPO-LegS in its normal basis).

Vectors Λ, P, B, C live in the full complex space of size N, built from one member of each conjugate
pair (:func:`conjugate_pairs`), so the system equals a real one and ``K_l = Re(C Ā^l B̄)`` is real.

Kernels:
- bilinear: the truncated generating function at the L-th roots of unity ``ω^k``, through a Cauchy kernel
  with the Woodbury correction for the low-rank term, then an inverse FFT (S4's algorithm). With
  ``C̃ = C (I - Ā^L)``, ``s = (1 + ω)/2`` and ``k_ab = Σ_n a_n b_n · 2 / (2(1 - ω)/Δ - λ_n(1 + ω))``:
  ``K̂(ω) = k_{C̃B} - s k_{C̃P} k_{P̄B} / (1 + s k_{P̄P})``. On CPU the frequencies are processed in chunks
  under activation checkpointing; on GPU one Triton kernel computes the four Cauchy products
  (:func:`seqpipe.kernels.s4_triton.cauchy_triton`); neither holds an (H, N, L) tensor.
- zoh: ``Ā = exp(ΔA)`` has no Woodbury form, so the kernel is built by Krylov blocks: the columns
  ``Ā^t B̄`` (t < T) once, then ``C Ā^{jT}`` advanced chunk by chunk; memory (H, N, T).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from seqpipe.kernels.backends import resolve_backend
from seqpipe.kernels.fftconv import fft_conv
from seqpipe.kernels.s4d import Disc, chunk_length, hippo_legs_normal


def conjugate_pairs(half: torch.Tensor) -> torch.Tensor:
    """(..., N/2) -> (..., N): the kept member of each conjugate pair, then its conjugate."""
    return torch.cat([half, half.conj()], dim=-1)


def dplr_init(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (real size N) as ``(Λ, P, B)``, each (N/2,) complex128, one of each conjugate pair."""
    Lambda, _, P, B = hippo_legs_normal(N)
    return Lambda[: N // 2], P[: N // 2], B[: N // 2]


class DenseSSM(NamedTuple):
    """A discretised SSM with a dense state matrix: ``dA`` (H, N, N), ``dB`` (H, N), complex."""

    dA: torch.Tensor
    dB: torch.Tensor


def discretize_dplr(Lambda: torch.Tensor, P: torch.Tensor, B: torch.Tensor, log_dt: torch.Tensor, disc: Disc) -> DenseSSM:
    """Λ, P, B (H, N) full-space complex, log_dt (H,) -> :class:`DenseSSM`; the one discretisation of S4-DPLR.

    zoh: ``[[Ā, B̄], [0, 1]] = exp([[ΔA, ΔB], [0, 0]])``; bilinear: ``Ā = (I - ΔA/2)⁻¹(I + ΔA/2)``,
    ``B̄ = (I - ΔA/2)⁻¹ ΔB``. Computed in complex128 (the matrices are small; A is far from normal, so
    float32 matrix exponentials lose digits) and returned in Λ's precision.
    """
    H, N = Lambda.shape
    out_dtype = Lambda.dtype
    Lambda, P, B = (v.to(torch.complex128) for v in (Lambda, P, B))
    dt = torch.exp(log_dt.double()).to(Lambda.dtype)[:, None, None]
    A = torch.diag_embed(Lambda) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)
    if disc == "zoh":
        augmented = torch.zeros(H, N + 1, N + 1, dtype=A.dtype, device=A.device)
        augmented[:, :N, :N] = dt * A
        augmented[:, :N, N] = dt[..., 0] * B
        block = torch.linalg.matrix_exp(augmented)
        return DenseSSM(block[:, :N, :N].to(out_dtype), block[:, :N, N].to(out_dtype))
    if disc == "bilinear":
        eye = torch.eye(N, dtype=A.dtype, device=A.device)
        left = eye - dt / 2 * A
        dA, dB = torch.linalg.solve(left, eye + dt / 2 * A), torch.linalg.solve(left, dt[..., 0] * B)
        return DenseSSM(dA.to(out_dtype), dB.to(out_dtype))
    raise ValueError(f"S4 disc must be 'zoh' or 'bilinear', got {disc!r}")


def krylov(dA: torch.Tensor, v: torch.Tensor, length: int) -> torch.Tensor:
    """Columns ``Ā^t v`` for t < length by doubling: dA (H, N, N), v (..., H, N) -> (..., H, N, length)."""
    columns, power = v.unsqueeze(-1), dA
    while columns.shape[-1] < length:
        columns = torch.cat([columns, power @ columns], dim=-1)
        power = power @ power
    return columns[..., :length]


def krylov_kernel(C: torch.Tensor, ssm: DenseSSM, length: int) -> torch.Tensor:
    """``K_l = Re(C Ā^l B̄)`` in Krylov blocks of T steps: C (..., H, N) -> (..., H, L); holds (H, N, T)."""
    H, N = ssm.dB.shape
    block = min(length, chunk_length(H, N))
    columns = krylov(ssm.dA, ssm.dB, block)  # (H, N, T)
    advance = torch.linalg.matrix_power(ssm.dA, block)
    row, pieces = C, []
    for start in range(0, length, block):
        pieces.append(torch.einsum("...hn,hnt->...ht", row, columns[..., : min(block, length - start)]).real)
        row = torch.einsum("...hn,hnm->...hm", row, advance)
    return torch.cat(pieces, dim=-1)


def _woodbury(k_cb, k_cp, k_pb, k_pp, omega) -> torch.Tensor:
    """K̂ = k_{C̃B} - s k_{C̃P} k_{P̄B} / (1 + s k_{P̄P}) with s = (1 + ω) / 2; all (..., H, F)."""
    s = (1 + omega) / 2
    return k_cb - s * k_cp * k_pb / (1 + s * k_pp)


def _cauchy_frequencies(C_tilde, Lambda, P, B, dt, omega) -> torch.Tensor:
    """K̂ at the frequencies ``omega`` (F,): C_tilde (..., H, N) -> (..., H, F); holds (H, N, F)."""
    cauchy = 2 / (2 * (1 - omega) / dt[:, None, None] - Lambda.unsqueeze(-1) * (1 + omega))  # (H, N, F)
    k_cb = torch.einsum("...hn,hnf->...hf", C_tilde * B, cauchy)
    k_cp = torch.einsum("...hn,hnf->...hf", C_tilde * P, cauchy)
    k_pb = torch.einsum("hn,hnf->hf", P.conj() * B, cauchy)
    k_pp = torch.einsum("hn,hnf->hf", P.conj() * P, cauchy)
    return _woodbury(k_cb, k_cp, k_pb, k_pp, omega)


def _cauchy_frequencies_triton(C_tilde, Lambda, P, B, dt, omega) -> torch.Tensor:
    """Same as :func:`_cauchy_frequencies`, the four Cauchy products in one Triton launch (float32)."""
    from seqpipe.kernels.s4_triton import cauchy_triton

    H, N = Lambda.shape
    lead = C_tilde.shape[:-2]
    rows = torch.cat([(C_tilde * B).reshape(-1, H, N), (C_tilde * P).reshape(-1, H, N),
                      torch.stack([P.conj() * B, P.conj() * P])])
    k = cauchy_triton(rows, Lambda, dt, omega)
    M = (rows.shape[0] - 2) // 2
    return _woodbury(k[:M].reshape(*lead, H, -1), k[M:2 * M].reshape(*lead, H, -1), k[-2], k[-1], omega)


def cauchy_kernel(C_tilde, Lambda, P, B, log_dt, length: int, backend: str = "auto") -> torch.Tensor:
    """Bilinear DPLR kernel from the generating function: C_tilde (..., H, N) -> (..., H, L) real.

    ``backend``: "triton" (GPU, or CPU under ``TRITON_INTERPRET=1``), "chunked"/"ref" (PyTorch, checkpointed
    chunks of frequencies), "auto" (triton on CUDA).
    """
    H, N = Lambda.shape
    frequencies = length // 2 + 1
    k = torch.arange(frequencies, device=Lambda.device, dtype=log_dt.dtype)
    omega = torch.exp(-2j * math.pi * k / length).to(Lambda.dtype)
    if resolve_backend(backend, Lambda, "cauchy_kernel", "Lambda") == "triton":
        spectrum = _cauchy_frequencies_triton(C_tilde, Lambda, P, B, torch.exp(log_dt), omega)
    else:
        dt = torch.exp(log_dt).to(Lambda.dtype)
        block = chunk_length(H, N)
        spectrum = torch.cat([
            checkpoint(_cauchy_frequencies, C_tilde, Lambda, P, B, dt, omega[start : start + block], use_reentrant=False)
            for start in range(0, frequencies, block)
        ], dim=-1)
    return torch.fft.irfft(spectrum, n=length)


def dplr_kernel(
    C: torch.Tensor, Lambda: torch.Tensor, P: torch.Tensor, B: torch.Tensor, log_dt: torch.Tensor, length: int, disc: Disc,
    backend: str = "auto",
) -> torch.Tensor:
    """S4-DPLR convolution kernel ``Re(C Ā^l B̄)``, l < length; C (..., H, N), Λ, P, B (H, N) -> (..., H, L).

    ``backend`` picks the Cauchy implementation of the bilinear kernel (see :func:`cauchy_kernel`).
    """
    ssm = discretize_dplr(Lambda, P, B, log_dt, disc)
    if disc == "zoh":
        return krylov_kernel(C, ssm, length)
    C_tilde = C - torch.einsum("...hn,hnm->...hm", C, torch.linalg.matrix_power(ssm.dA, length))
    return cauchy_kernel(C_tilde, Lambda, P, B, log_dt, length, backend)


def dense_ssm_chunk(u: torch.Tensor, state: torch.Tensor, C: torch.Tensor, ssm: DenseSSM) -> tuple[torch.Tensor, torch.Tensor]:
    """One streamed chunk: u (B, H, T) real, state (B, H, N), C (H, N) -> (y (B, H, T) without D, new state).

    ``y_t = Σ_{s≤t} K_{t-s} u_s + Re(C Ā^{t+1} x)``, ``x' = Ā^T x + Σ_s Ā^{T-1-s} B̄ u_s``, in blocks of at
    most T₀ steps so memory stays (H, N, T₀) whatever T.
    """
    H, N = ssm.dB.shape
    T = u.shape[-1]
    block = min(T, chunk_length(H, N))
    rows = krylov(ssm.dA.transpose(-1, -2), C, block)  # rows[..., t] = C Ā^t
    columns = krylov(ssm.dA, ssm.dB, block)  # columns[..., t] = Ā^t B̄
    kernel = torch.einsum("hnt,hn->ht", rows, ssm.dB).real
    outputs = []
    for start in range(0, T, block):
        piece = u[..., start : start + block]
        m = piece.shape[-1]
        carried = torch.einsum("hnm,bhm->bhn", ssm.dA, state)
        y = fft_conv(piece, kernel[:, :m]) + torch.einsum("hnt,bhn->bht", rows[..., :m], carried).real.to(u.dtype)
        state = torch.einsum("hnm,bhm->bhn", torch.linalg.matrix_power(ssm.dA, m), state) + torch.einsum(
            "hnj,bhj->bhn", columns[..., :m], piece.flip(-1).to(columns.dtype)
        )
        outputs.append(y)
    return torch.cat(outputs, dim=-1), state


def dense_ssm_step(u_t: torch.Tensor, state: torch.Tensor, C: torch.Tensor, ssm: DenseSSM) -> tuple[torch.Tensor, torch.Tensor]:
    """u_t (B, H), state (B, H, N) -> (y_t (B, H) without D, next state); O(H N²)."""
    state = torch.einsum("hnm,bhm->bhn", ssm.dA, state) + ssm.dB * u_t.unsqueeze(-1)
    return (C * state).sum(-1).real, state
