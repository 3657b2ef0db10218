"""The Mamba block: input-dependent (selective) state space layer of Gu & Dao (2023)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.errors import ConfigError
from seqpipe.kernels import causal_conv1d, causal_conv1d_step, selective_scan, selective_state_update
from seqpipe.streaming import StreamingModule, no_weight_decay


def dt_bias(size: int, dt_min: float, dt_max: float) -> nn.Parameter:
    """The Δ bias (size,) of a Mamba block: softplus⁻¹ of steps Δ drawn log-uniformly in [dt_min, dt_max]
    (floored at 1e-4), so that ``softplus(dt_bias)`` starts at Δ; kept out of weight decay."""
    if not 0 < dt_min <= dt_max:
        raise ConfigError(f"Mamba: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return no_weight_decay(nn.Parameter(dt + torch.log(-torch.expm1(-dt))))  # inverse softplus


class MambaBlock(StreamingModule):
    """Mamba mixer: in-projection, causal depthwise conv, selective scan gated by a SiLU branch, out-projection.

    Initialisation follows the paper: Δ bias drawn log-uniform in [dt_min, dt_max] through an inverse
    softplus, ``A_log = log(1..N)``, ``D = 1``; A_log, D and the Δ bias are kept out of weight decay.

    Args:
        d_model: channels at the block boundary.
        d_state: N, the state size per channel.
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the Δ projection; "auto" = ceil(d_model / 16).
        dt_min: the smallest initial step size Δ (drawn log-uniform up to ``dt_max``).
        dt_max: the largest initial step size Δ.
        scan_backend: selective-scan backend of ``forward``/``forward_chunk`` ("auto", "ref", "chunked",
            "triton"); ``step`` uses the single-token update of the tensor's device.

    State: ``(conv_state (B, d_inner, d_conv - 1), ssm_state (B, d_inner, N) float32)``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.d_inner, d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(self.d_inner))
        nn.init.kaiming_uniform_(self.conv_weight.unsqueeze(1), a=math.sqrt(5))
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        self.dt_bias = dt_bias(self.d_inner, dt_min, dt_max)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = no_weight_decay(nn.Parameter(torch.log(A)))
        self.D = no_weight_decay(nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _ssm_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., d_inner) -> delta (..., d_inner), B (..., N), C (..., N)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return self.dt_proj(dt), B, C

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d_model) -> (B, L, d_model). Causal: right padding never reaches valid positions."""
        y, _ = self._mix(x, None)
        return y

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32):
        conv_state = torch.zeros(batch_size, self.d_inner, self.conv_weight.shape[1] - 1, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv_state, ssm_state

    def forward_chunk(self, x: torch.Tensor, state):
        """x (B, T, d_model), state -> y (B, T, d_model), the state after the chunk."""
        return self._mix(x, state)

    def _mix(self, x: torch.Tensor, state):
        x_in, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        conv_state, ssm_state = (None, None) if state is None else state
        x_conv, conv_state = causal_conv1d(x_in, self.conv_weight, self.conv_bias, conv_state, return_final_state=True)
        x_conv = F.silu(x_conv)
        delta, B, C = self._ssm_params(x_conv.transpose(1, 2))
        y, ssm_state = selective_scan(
            x_conv, delta.transpose(1, 2), -torch.exp(self.A_log.float()), B.transpose(1, 2), C.transpose(1, 2),
            self.D.float(), z, self.dt_bias.float(), delta_softplus=True,
            initial_state=ssm_state, return_last_state=True, backend=self.scan_backend,
        )
        return self.out_proj(y.transpose(1, 2)), (conv_state, ssm_state)

    def step(self, x_t: torch.Tensor, state):
        """x_t (B, d_model), state -> y_t (B, d_model), the next state; cost independent of position."""
        conv_state, ssm_state = state
        x_in, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, d_inner) each
        x_conv, conv_state = causal_conv1d_step(x_in, conv_state, self.conv_weight, self.conv_bias)
        x_conv = F.silu(x_conv)
        delta, B, C = self._ssm_params(x_conv)
        y, ssm_state = selective_state_update(
            ssm_state, x_conv, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z,
            dt_bias=self.dt_bias.float(), dt_softplus=True,
        )
        return self.out_proj(y), (conv_state, ssm_state)
