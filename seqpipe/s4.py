"""The S4 block: a structured state space layer (Gu et al. 2022; S4D, Gu et al. 2022b) as a streaming module."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.kernels import fft_conv
from seqpipe.kernels.s4 import DiagonalSSM, diag_init, diag_state_response, discretize_diag, log_uniform_dt, s4d_kernel, vandermonde
from seqpipe.streaming import StreamingModule, no_weight_decay


def _complex_parameter(value: torch.Tensor) -> nn.Parameter:
    """Store a complex tensor as a real (..., 2) parameter, so optimisers and ``.double()`` treat it plainly."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex64)).clone())


class S4Block(StreamingModule):
    """S4 mixer: per-channel SSM convolution with D skip, GELU, then ``Linear(H, 2H)`` and GLU.

    Args:
        d_model: H, channels at the block boundary; each channel has its own SSM.
        d_state: size of each channel's real state; the diagonal mode keeps d_state/2 complex states,
            one of each conjugate pair.
        mode: "diag" (S4D, Vandermonde kernel) or "dplr" (S4, HiPPO-LegS diagonal-plus-low-rank).
        init: "legs" (HiPPO-LegS), "lin" or "inv" (S4D-Lin / S4D-Inv; diagonal mode only).
        disc: "zoh" or "bilinear" discretisation.
        dt_min, dt_max: range of the initial step Δ, drawn log-uniform per channel.
        bidirectional: add an anti-causal kernel (own C, shared A, B, Δ); such a block cannot stream.
        dropout: dropout after the GELU.
        kernel_backend: Vandermonde backend ("auto", "chunked", "triton", "ref").

    ``forward(x (B, L, H), lengths) -> (B, L, H)``. State: (B, H, d_state/2) complex, the SSM state.
    Parameters A (real part stored as log(-Re A), so Re A < 0 always), B, log Δ and D are kept out of
    weight decay.
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
        if mode != "diag":
            raise ValueError(f"S4Block: mode must be 'diag' or 'dplr', got {mode!r}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4Block: d_state must be even and ≥ 2 (conjugate pairs), got {d_state}")
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"S4Block: disc must be 'zoh' or 'bilinear', got {disc!r}")
        self.d_model, self.d_state, self.mode, self.disc = d_model, d_state, mode, disc
        self.bidirectional, self.kernel_backend = bidirectional, kernel_backend
        A, B = diag_init(init, d_state // 2)
        self.log_dt = no_weight_decay(nn.Parameter(log_uniform_dt(d_model, dt_min, dt_max)))
        self.A_log_neg_real = no_weight_decay(nn.Parameter(torch.log(-A.real).float().repeat(d_model, 1)))
        self.A_imag = no_weight_decay(nn.Parameter(A.imag.float().repeat(d_model, 1)))
        self.B = no_weight_decay(_complex_parameter(B.repeat(d_model, 1)))
        channels = 2 if bidirectional else 1
        self.C = _complex_parameter(torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64))
        self.D = no_weight_decay(nn.Parameter(torch.randn(d_model)))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def _ssm(self) -> DiagonalSSM:
        A = torch.complex(-torch.exp(self.A_log_neg_real), self.A_imag)
        return discretize_diag(A, torch.view_as_complex(self.B), self.log_dt, self.disc)

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """SSM output y (B, H, L) -> block output (B, L, H): GELU, dropout, Linear to 2H, GLU."""
        return F.glu(self.output_linear(self.dropout(F.gelu(y)).transpose(1, 2)), dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H), lengths (B,) of right-padded inputs -> (B, L, H); padding never reaches valid positions."""
        u = x.transpose(1, 2)  # (B, H, L), the kernel layout
        if lengths is not None:
            valid = torch.arange(u.shape[-1], device=u.device) < lengths.to(u.device)[:, None]
            u = u * valid[:, None, :].to(u.dtype)  # the anti-causal kernel would read padded positions
        K = s4d_kernel(torch.view_as_complex(self.C), self._ssm(), u.shape[-1], self.kernel_backend)
        y = fft_conv(u, K[0], self.D, bidirectional_k=K[1] if self.bidirectional else None)
        return self._output(y)

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, self.d_state // 2, device=device, dtype=complex_dtype)

    def _check_streamable(self) -> None:
        if self.bidirectional:
            raise RuntimeError(
                "S4Block(bidirectional=True) reads future tokens, so it cannot stream; "
                "use forward() on whole sequences, or build the block with bidirectional=False"
            )

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, H), state (B, H, N) -> y (B, T, H), state after the chunk; exact, not approximate.

        y = the chunk's own convolution + ``2 Re(C Ā^{t+1} x_prev)`` from the carried state.
        """
        self._check_streamable()
        u = x.transpose(1, 2)
        ssm = self._ssm()
        T = u.shape[-1]
        C = torch.view_as_complex(self.C)[0]
        work = torch.promote_types(state.dtype, ssm.dA.dtype)
        state = state.to(work)
        y = fft_conv(u, s4d_kernel(C, ssm, T, self.kernel_backend), self.D)
        y = y + vandermonde(C * ssm.dA * state, ssm.log_dA, T, self.kernel_backend).to(y.dtype)
        state = torch.exp(ssm.log_dA * T) * state + diag_state_response(u, ssm)
        return self._output(y), state

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, H), state (B, H, N) -> y_t (B, H), next state; O(H N) whatever the position."""
        self._check_streamable()
        ssm = self._ssm()
        state = ssm.dA * state + ssm.dB * x_t.unsqueeze(-1)
        y = 2 * (torch.view_as_complex(self.C)[0] * state).sum(-1).real + self.D * x_t
        return self._output(y.to(x_t.dtype).unsqueeze(-1)).squeeze(1), state
