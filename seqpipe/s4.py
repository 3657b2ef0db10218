"""The S4 block: a structured state space layer (Gu et al. 2022; S4D, Gu et al. 2022b) as a streaming module."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.kernels import fft_conv
from seqpipe.kernels.s4d import (
    DiagonalSSM, diag_init, diag_ssm_chunk, diag_ssm_step, discretize_diag, log_uniform_dt, s4d_kernel,
)
from seqpipe.kernels.s4_dplr import (
    DenseSSM, conjugate_pairs, dense_ssm_chunk, dense_ssm_step, discretize_dplr, dplr_init, dplr_kernel,
)
from seqpipe.chunked import valid_positions
from seqpipe.errors import ConfigError
from seqpipe.streaming import StreamingModule, cannot_stream, no_weight_decay


def _complex_parameter(value: torch.Tensor) -> nn.Parameter:
    """Store a complex tensor as a real (..., 2) parameter, so optimisers and ``.double()`` treat it plainly."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex64)).clone())


class S4Block(StreamingModule):
    """S4 mixer: per-channel SSM convolution with D skip, GELU, then ``Linear(H, 2H)`` and GLU.

    Args:
        d_model: H, channels at the block boundary; each channel has its own SSM.
        d_state: N, size of each channel's real state (even); parameters keep one member of each
            conjugate pair (N/2 complex values per vector).
        mode: "diag" (S4D: diagonal A, Vandermonde kernel, state (B, H, N/2)) or "dplr" (S4: HiPPO-LegS
            as ``diag(Λ) - P P*``, state (B, H, N); kernel through the Cauchy kernel with the Woodbury
            correction for bilinear, through Krylov blocks for zoh).
        init: "legs" (HiPPO-LegS), "lin" or "inv" (S4D-Lin / S4D-Inv; diagonal mode only).
        disc: "zoh" or "bilinear" discretisation.
        dt_min: the smallest initial step Δ (drawn log-uniform per channel up to ``dt_max``).
        dt_max: the largest initial step Δ.
        bidirectional: add an anti-causal kernel (own C, shared A, B, Δ); such a block cannot stream.
        dropout: dropout after the GELU.
        kernel_backend: backend of the Vandermonde (diagonal mode) or Cauchy (DPLR, bilinear) kernel:
            "auto" (triton on CUDA), "chunked", "triton", "ref".

    ``forward(x (B, L, H), lengths) -> (B, L, H)``; the state is the complex SSM state.
    A's real part is stored as log(-Re A), so Re A < 0 whatever the optimiser does. A, P, B, log Δ
    and D are kept out of weight decay.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        mode: Literal["diag", "dplr"] = "diag",
        init: Literal["legs", "lin", "inv"] = "legs",
        disc: Literal["zoh", "bilinear"] = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        kernel_backend: str = "auto",
    ):
        super().__init__()
        if mode not in ("diag", "dplr"):
            raise ConfigError(f"S4Block: mode must be 'diag' or 'dplr', got {mode!r}")
        if d_state < 2 or d_state % 2:
            raise ConfigError(f"S4Block: d_state must be even and ≥ 2 (conjugate pairs), got {d_state}")
        if disc not in ("zoh", "bilinear"):
            raise ConfigError(f"S4Block: disc must be 'zoh' or 'bilinear', got {disc!r}")
        if mode == "dplr" and init != "legs":
            raise ConfigError(f"S4Block: mode='dplr' is HiPPO-LegS in normal-plus-low-rank form; use init='legs' (got {init!r}) or mode='diag'")
        self.d_model, self.d_state, self.mode, self.disc = d_model, d_state, mode, disc
        self.bidirectional, self.kernel_backend = bidirectional, kernel_backend
        half = d_state // 2
        if mode == "dplr":
            A, P, B = dplr_init(d_state)
            self.P = no_weight_decay(_complex_parameter(P.repeat(d_model, 1)))
        else:
            A, B = diag_init(init, half)
        self.log_dt = no_weight_decay(nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max)))
        self.A_log_neg_real = no_weight_decay(nn.Parameter(torch.log(-A.real).float().repeat(d_model, 1)))
        self.A_imag = no_weight_decay(nn.Parameter(A.imag.float().repeat(d_model, 1)))
        self.B = no_weight_decay(_complex_parameter(B.repeat(d_model, 1)))
        channels = 2 if bidirectional else 1
        self.C = _complex_parameter(torch.randn(channels, d_model, half, dtype=torch.complex64))
        self.D = no_weight_decay(nn.Parameter(torch.randn(d_model)))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def _vectors(self) -> tuple[torch.Tensor, ...]:
        """Continuous (A or Λ, B, C (channels, H, ·)) [+ P], full-space for DPLR, kept halves for diag."""
        A = torch.complex(-torch.exp(self.A_log_neg_real), self.A_imag)
        B, C = torch.view_as_complex(self.B), torch.view_as_complex(self.C)
        if self.mode == "diag":
            return A, B, C
        return conjugate_pairs(A), conjugate_pairs(B), conjugate_pairs(C), conjugate_pairs(torch.view_as_complex(self.P))

    def _kernel(self, length: int) -> torch.Tensor:
        """K (channels, H, length): the causal kernel, and the anti-causal one when bidirectional."""
        if self.mode == "diag":
            A, B, C = self._vectors()
            return s4d_kernel(C, discretize_diag(A, B, self.log_dt, self.disc), length, self.kernel_backend)
        Lambda, B, C, P = self._vectors()
        return dplr_kernel(C, Lambda, P, B, self.log_dt, length, self.disc, self.kernel_backend)

    def _recurrence(self, dtype: torch.dtype) -> tuple[torch.Tensor, DiagonalSSM | DenseSSM]:
        """(C (H, ·), discretised SSM) in complex ``dtype``, for the streaming paths."""
        if self.mode == "diag":
            A, B, C = self._vectors()
            ssm = discretize_diag(A, B, self.log_dt, self.disc)
            return C[0].to(dtype), DiagonalSSM(*(t.to(dtype) for t in ssm))
        Lambda, B, C, P = self._vectors()
        ssm = discretize_dplr(Lambda, P, B, self.log_dt, self.disc)
        return C[0].to(dtype), DenseSSM(*(t.to(dtype) for t in ssm))

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """SSM output y (B, H, L) -> block output (B, L, H): GELU, dropout, Linear to 2H, GLU."""
        return F.glu(self.output_linear(self.dropout(F.gelu(y)).transpose(1, 2)), dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H), lengths (B,) of right-padded inputs -> (B, L, H); padding never reaches valid positions."""
        u = x.transpose(1, 2)  # (B, H, L), the kernel layout
        if lengths is not None:
            valid = valid_positions(lengths, 0, u.shape[-1], u.device)
            u = u * valid[:, None, :].to(u.dtype)  # the anti-causal kernel would read padded positions
        K = self._kernel(u.shape[-1])
        y = fft_conv(u, K[0], self.D, bidirectional_k=K[1] if self.bidirectional else None)
        return self._output(y)

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zeros (B, H, N/2) for diag, (B, H, N) for DPLR; complex128 for float64, complex64 otherwise."""
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        size = self.d_state // 2 if self.mode == "diag" else self.d_state
        return torch.zeros(batch_size, self.d_model, size, device=device, dtype=complex_dtype)

    def _check_streamable(self) -> None:
        if self.bidirectional:
            raise cannot_stream(self)

    def _work_dtype(self, state: torch.Tensor) -> torch.dtype:
        return torch.promote_types(state.dtype, torch.view_as_complex(self.C).dtype)

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, H), state -> y (B, T, H), state after the chunk; exact, not approximate.

        y = the chunk's own convolution + the carried state's response, ``Re(C Ā^{t+1} x_prev)``.
        """
        self._check_streamable()
        u = x.transpose(1, 2)
        work = self._work_dtype(state)
        # under autocast (bf16-mixed training) the recurrence still runs in the state's precision
        with torch.autocast(x.device.type, enabled=False):
            C, ssm = self._recurrence(work)
            if self.mode == "diag":
                y, state = diag_ssm_chunk(u, state.to(work), C, ssm, self.kernel_backend)
            else:
                y, state = dense_ssm_chunk(u, state.to(work), C, ssm)
        return self._output(y.to(x.dtype) + self.D[:, None] * u), state

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, H), state -> y_t (B, H), next state; O(H N) for diag, O(H N²) for DPLR, whatever the position."""
        self._check_streamable()
        work = self._work_dtype(state)
        C, ssm = self._recurrence(work)
        update = diag_ssm_step if self.mode == "diag" else dense_ssm_step
        y, state = update(x_t, state.to(work), C, ssm)
        return self._output((y.to(x_t.dtype) + self.D * x_t).unsqueeze(-1)).squeeze(1), state
