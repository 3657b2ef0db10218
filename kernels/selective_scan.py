"""Selective scan (Mamba's S6): the reference step loop and the dispatcher over its backends.

The signature matches ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` plus ``initial_state``,
so results can be checked against mamba_ssm's own reference. Shapes:

    u, delta: (B, D, L)    A: (D, N)    B, C: (B, N, L), grouped (B, G, N, L) or time-invariant (D, N)
    D, delta_bias: (D,)    z: (B, D, L)    initial_state: (B, D, N)
    returns y (B, D, L) [, last_state (B, D, N)]

Recurrence per channel d and state n, with dt = softplus(delta + delta_bias) when asked:

    x_t = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t        y_t = <x_t, C_t> + D * u_t,  y_t *= silu(z_t)

Every backend computes in float32 (float64 for float64 inputs), returns y in the input dtype and the
last state in the compute dtype.
"""

from __future__ import annotations

import torch

from seqpipe.kernels.backends import resolve_backend
from seqpipe.kernels.scan_chunked import selective_scan_chunked
from seqpipe.kernels.scan_common import check_scan_inputs, compute_dtype, discretize, gate_output, scan_groups


def _per_step(M: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Split B or C into per-step tensors broadcastable against the state viewed as (B, G, D/G, N)."""
    if M.dim() == 2:  # time-invariant (D, N)
        return [M.view(1, groups, -1, M.shape[-1])]  # reused at every step
    grouped = M if M.dim() == 4 else M.unsqueeze(1)  # (B, G, N, L)
    return list(grouped.unsqueeze(2).unbind(-1))  # L tensors of (B, G, 1, N)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Step-loop reference: exact in float64, float32 state and accumulation otherwise.

    Tensors are split along L with ``unbind`` so autograd's backward stays linear in L (indexing a
    precomputed tensor per step would make it quadratic).
    """
    compute = compute_dtype(u.dtype)
    batch, dim, _ = u.shape
    u_c = u.to(compute)
    delta_c = discretize(delta.to(compute), None if delta_bias is None else delta_bias.to(compute), delta_softplus)
    groups = scan_groups(B, C)
    B_steps, C_steps = _per_step(B.to(compute), groups), _per_step(C.to(compute), groups)
    view = (batch, groups, dim // groups)
    A_g = A.to(compute).view(groups, dim // groups, -1)
    state = (
        torch.zeros(*view, A.shape[1], dtype=compute, device=u.device)
        if initial_state is None
        else initial_state.to(compute).view(*view, -1)
    )
    ys = []
    for t, (u_t, dt_t) in enumerate(zip(u_c.unbind(-1), delta_c.unbind(-1))):
        dt_t, u_t = dt_t.view(*view, 1), u_t.view(*view, 1)
        B_t = B_steps[t if len(B_steps) > 1 else 0]
        C_t = C_steps[t if len(C_steps) > 1 else 0]
        state = torch.exp(dt_t * A_g) * state + dt_t * u_t * B_t
        ys.append((state * C_t).sum(-1).reshape(batch, dim))
    y = gate_output(torch.stack(ys, dim=-1), u_c, None if D is None else D.to(compute),
                    None if z is None else z.to(compute)).to(u.dtype)
    if return_last_state:
        return y, state.reshape(batch, dim, -1)
    return y


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with mamba_ssm's signature; see the module docstring for shapes.

    ``backend``: "ref" (step loop), "chunked" (CPU two-level scan), "triton" (GPU, or CPU under
    ``TRITON_INTERPRET=1``), or "auto" (triton on CUDA tensors, chunked otherwise).
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
    chosen = resolve_backend(backend, u, "selective_scan", "u")
    if chosen == "ref":
        return selective_scan_ref(*args)
    if chosen == "chunked":
        return selective_scan_chunked(*args)
    from seqpipe.kernels.scan_triton import selective_scan_triton  # triton is optional (e.g. macOS)

    return selective_scan_triton(*args)
