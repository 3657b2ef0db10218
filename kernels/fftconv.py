"""Long convolution through the FFT: causal, or two-sided with a second (anti-causal) kernel.

    y[t] = Σ_{s ≤ t} k[t - s] u[s]  +  Σ_{s > t} k_b[s - t - 1] u[s]  +  D u[t]

The anti-causal kernel starts at lag 1 (``k_b[0]`` multiplies ``u[t + 1]``): lag 0 belongs to ``k`` and
``D`` alone. Transforms have length n ≥ 2L - 1, so no lag wraps around.
"""

from __future__ import annotations

import torch


def _fft_length(length: int) -> int:
    """Smallest n ≥ 2L - 1 whose only prime factors are 2, 3 and 5: room for every lag in (-L, L) without wrap,
    and a size pocketfft and cuFFT transform fast. A power of two ≥ 2L - 1 can be nearly twice as long (L 300:
    600 against 1,024, L 81: 162 against 256); for L a power of two both are 2L."""
    target = max(1, 2 * length - 1)
    best = 1 << (target - 1).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            # the smallest power of two that lifts threes to the target
            candidate = threes << max(0, (-(-target // threes) - 1).bit_length())
            best = min(best, candidate)
            threes *= 3
        fives *= 5
    return best


class _CircularConv(torch.autograd.Function):
    """y = the first L values of the circular convolution of length n of u (B, H, L), zero-padded, with k (H, n):
    ``y[t] = Σ_s k[(t - s) mod n] u[s]``. Its gradients are circular correlations, computed with real transforms
    as the forward is (autograd's own backward of ``rfft`` takes a complex transform of the full length n):
    ``du[s] = Σ_t g[t] k[(t - s) mod n]`` and ``dk[m] = Σ_b Σ_t g[t] u[(t - m) mod n]``. First derivatives
    only (no double backward)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n, length = k.shape[-1], u.shape[-1]
        u_f, k_f = torch.fft.rfft(u, n=n), torch.fft.rfft(k)
        ctx.save_for_backward(u_f, k_f)
        ctx.n = n
        return torch.fft.irfft(u_f * k_f, n=n)[..., :length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        u_f, k_f = ctx.saved_tensors
        n, length = ctx.n, grad.shape[-1]
        g_f = torch.fft.rfft(grad.to(u_f.real.dtype), n=n)
        du = torch.fft.irfft(g_f * k_f.conj(), n=n)[..., :length] if ctx.needs_input_grad[0] else None
        dk = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n) if ctx.needs_input_grad[1] else None
        return du, dk


def fft_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    bidirectional_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolve u (B, H, L) with k (H, L') (L' ≤ L is zero-padded; longer is cut) -> y (B, H, L) in u's dtype.

    Args:
        u: (B, H, L) input.
        k: (H, L) causal kernel, ``k[:, 0]`` at lag 0.
        D: (H,) skip term added as ``D u``.
        bidirectional_k: (H, L) anti-causal kernel, ``bidirectional_k[:, j]`` at lag -(j + 1).

    Computed in float32 at least (float64 stays float64), whatever u's dtype.
    """
    length = u.shape[-1]
    compute = torch.promote_types(u.dtype, torch.float32)
    n = _fft_length(length)
    causal = k[..., :length].to(compute)
    lags = torch.nn.functional.pad(causal, (0, n - causal.shape[-1]))  # (H, n): lag j at j, lag -j at n - j
    if bidirectional_k is not None:
        anti_causal = bidirectional_k[..., : length - 1].to(compute).flip(-1)  # lags -(its length) .. -1
        lags = torch.cat([lags[..., : n - anti_causal.shape[-1]], anti_causal], dim=-1)
    y = _CircularConv.apply(u.to(compute), lags)
    if D is not None:
        y = y + u.to(compute) * D.to(compute)[:, None]
    return y.to(u.dtype)


def fft_conv_ref(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    bidirectional_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for :func:`fft_conv`: the sums written out in float64 with a Toeplitz matrix; O(H L²)."""
    length = u.shape[-1]
    t = torch.arange(length, device=u.device)
    lag = t[:, None] - t[None, :]  # (L_out, L_in): t - s
    k64 = torch.nn.functional.pad(k[..., :length].double(), (0, length - min(length, k.shape[-1])))
    toeplitz = torch.where(lag >= 0, k64[:, lag.clamp(min=0)], 0.0)  # (H, L, L)
    if bidirectional_k is not None:
        kb = torch.nn.functional.pad(bidirectional_k.double(), (0, max(0, length - bidirectional_k.shape[-1])))
        toeplitz = toeplitz + torch.where(lag < 0, kb[:, (-lag - 1).clamp(min=0)], 0.0)
    y = torch.einsum("hts,bhs->bht", toeplitz, u.double())
    if D is not None:
        y = y + u.double() * D.double()[:, None]
    return y
