"""The Mamba-2 block: the SSD layer of Dao & Gu (2024), multi-head with one scalar decay per head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.errors import ConfigError
from seqpipe.kernels import causal_conv1d, causal_conv1d_step, selective_state_update, ssd_scan
from seqpipe.mamba import dt_bias
from seqpipe.streaming import StreamingModule, no_weight_decay


class Mamba2Block(StreamingModule):
    """Mamba-2 mixer: one in-projection to (z, x, B, C, dt), a causal depthwise conv over (x, B, C), the SSD
    scan, a gated RMSNorm ``norm(y * silu(z))`` and an out-projection.

    Initialisation follows mamba_ssm's ``Mamba2``: Δ bias log-uniform in [dt_min, dt_max] through an
    inverse softplus, ``A = -uniform(1, 16)`` per head (stored as ``A_log``), ``D = 1``; A_log, D and the
    Δ bias are kept out of weight decay.

    Args:
        d_model: channels at the block boundary.
        d_state: N, the state size per head channel.
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        head_dim: P, channels per head; d_inner must be a multiple of it.
        n_groups: G, groups of heads sharing B and C; must divide the number of heads.
        chunk_size: T of the chunked scan (the Triton kernels round it up to a power of two >= 16).
        dt_min: the smallest initial step size Δ (drawn log-uniform up to ``dt_max``).
        dt_max: the largest initial step size Δ.
        scan_backend: SSD backend of ``forward``/``forward_chunk`` ("auto", "ref", "chunked", "triton");
            ``step`` uses the single-token update of the tensor's device.

    State: ``(conv_state (B, d_inner + 2 G N, d_conv - 1), ssm_state (B, H, P, N))``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % head_dim:
            raise ConfigError(f"Mamba2Block: d_inner = expand * d_model = {self.d_inner} is not a multiple of "
                              f"head_dim={head_dim}; choose a head_dim that divides it")
        self.n_heads = self.d_inner // head_dim
        if self.n_heads % n_groups:
            raise ConfigError(f"Mamba2Block: n_groups={n_groups} does not divide the {self.n_heads} heads")
        self.d_state, self.head_dim, self.n_groups = d_state, head_dim, n_groups
        self.chunk_size, self.scan_backend = chunk_size, scan_backend
        self.conv_dim = self.d_inner + 2 * n_groups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.n_heads, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(self.conv_dim))
        nn.init.kaiming_uniform_(self.conv_weight.unsqueeze(1), a=math.sqrt(5))
        self.dt_bias = dt_bias(self.n_heads, dt_min, dt_max)
        self.A_log = no_weight_decay(nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1, 16))))
        self.D = no_weight_decay(nn.Parameter(torch.ones(self.n_heads)))
        self.norm = nn.RMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d_model) -> (B, L, d_model). Causal: right padding never reaches valid positions."""
        y, _ = self._mix(x, None)
        return y

    def initial_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32):
        conv_state = torch.zeros(batch_size, self.conv_dim, self.conv_weight.shape[1] - 1, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch_size, self.n_heads, self.head_dim, self.d_state, device=device,
                                dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        return conv_state, ssm_state

    def forward_chunk(self, x: torch.Tensor, state):
        """x (B, T, d_model), state -> y (B, T, d_model), the state after the chunk."""
        return self._mix(x, state)

    def _split(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., in_proj out) -> z (..., d_inner), xBC (..., conv_dim), dt (..., H)."""
        return projected.split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)

    def _ssm_inputs(self, xBC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Convolved (..., conv_dim) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
        group_width = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, group_width, group_width], dim=-1)
        lead = xBC.shape[:-1]
        return (x.reshape(*lead, self.n_heads, self.head_dim), B.reshape(*lead, self.n_groups, self.d_state),
                C.reshape(*lead, self.n_groups, self.d_state))

    def _gated_out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, z (..., d_inner) -> out_proj(RMSNorm(y * silu(z))) (..., d_model)."""
        return self.out_proj(self.norm(y * F.silu(z)))

    def _mix(self, x: torch.Tensor, state):
        batch, length, _ = x.shape
        z, xBC, dt = self._split(self.in_proj(x))
        conv_state, ssm_state = (None, None) if state is None else state
        xBC, conv_state = causal_conv1d(xBC.transpose(1, 2), self.conv_weight, self.conv_bias, conv_state,
                                        return_final_state=True)
        x_heads, B, C = self._ssm_inputs(F.silu(xBC).transpose(1, 2))
        y, ssm_state = ssd_scan(
            x_heads, dt, -torch.exp(self.A_log.float()), B, C, self.D.float(), None, self.dt_bias.float(),
            dt_softplus=True, initial_state=ssm_state, return_final_state=True, chunk_size=self.chunk_size,
            backend=self.scan_backend,
        )
        return self._gated_out(y.reshape(batch, length, self.d_inner), z), (conv_state, ssm_state)

    def step(self, x_t: torch.Tensor, state):
        """x_t (B, d_model), state -> y_t (B, d_model), the next state; cost independent of position.

        One SSD step is the Mamba-1 state update over the H*P channels with per-head A, Δ and D repeated
        and the G groups of B and C, so it reuses :func:`selective_state_update`.
        """
        conv_state, ssm_state = state
        batch = x_t.shape[0]
        z, xBC, dt = self._split(self.in_proj(x_t))
        xBC, conv_state = causal_conv1d_step(xBC, conv_state, self.conv_weight, self.conv_bias)
        x_heads, B, C = self._ssm_inputs(F.silu(xBC))

        def per_channel(t: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H*P)
            return t.repeat_interleave(self.head_dim, dim=-1)

        A = per_channel(-torch.exp(self.A_log.float())).unsqueeze(-1).expand(self.d_inner, self.d_state)
        y, ssm_state = selective_state_update(
            ssm_state.reshape(batch, self.d_inner, self.d_state), x_heads.reshape(batch, self.d_inner),
            per_channel(dt), A, B, C, per_channel(self.D.float()), None, dt_bias=per_channel(self.dt_bias.float()),
            dt_softplus=True,
        )
        ssm_state = ssm_state.reshape(batch, self.n_heads, self.head_dim, self.d_state)
        return self._gated_out(y, z), (conv_state, ssm_state)
