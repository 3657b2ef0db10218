"""Selective scan (Mamba's S6): the reference step loop and the backend dispatcher.

The signature matches ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` plus ``initial_state``,
so results can be checked against mamba_ssm's own reference. Shapes:

    u, delta: (B, D, L)    A: (D, N)    B, C: (B, N, L), grouped (B, G, N, L) or time-invariant (D, N)
    D, delta_bias: (D,)    z: (B, D, L)    initial_state: (B, D, N)
    returns y (B, D, L) [, last_state (B, D, N)]

Recurrence per channel d and state n, with dt = softplus(delta + delta_bias) when asked:

    x_t = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t        y_t = <x_t, C_t> + D * u_t,  y_t *= silu(z_t)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

BACKENDS = ("ref", "chunked", "triton", "auto")


def check_scan_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or device does not fit."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, d_state), got shape {tuple(A.shape)}")
    d_state = A.shape[1]
    expected = {"delta": (delta, (batch, dim, length)), "z": (z, (batch, dim, length)),
                "D": (D, (dim,)), "delta_bias": (delta_bias, (dim,)),
                "initial_state": (initial_state, (batch, dim, d_state))}
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    for name, M in (("B", B), ("C", C)):
        ok = (
            (M.dim() == 2 and tuple(M.shape) == (dim, d_state))
            or (M.dim() == 3 and tuple(M.shape) == (batch, d_state, length))
            or (M.dim() == 4 and M.shape[0] == batch and M.shape[2:] == (d_state, length) and dim % M.shape[1] == 0)
        )
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must be ({batch}, {d_state}, {length}), (batch, groups, {d_state}, {length}) "
                f"with groups dividing dim={dim}, or time-invariant ({dim}, {d_state}); got {tuple(M.shape)}"
            )
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias,
               "initial_state": initial_state}
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"selective_scan: {name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {tensor.device} but u is on {u.device}")


def _per_step(M: torch.Tensor, dim: int) -> Callable[[int], torch.Tensor] | list[torch.Tensor]:
    """Split B or C into per-step tensors broadcastable against the state viewed as (B, G, D/G, N)."""
    if M.dim() == 2:  # time-invariant (D, N)
        return [M[None, None]]  # (1, 1, D, N), reused at every step
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
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    out_dtype = u.dtype
    batch, dim, length = u.shape
    u_c, delta_c, A_c = u.to(compute), delta.to(compute), A.to(compute)
    if delta_bias is not None:
        delta_c = delta_c + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta_c = F.softplus(delta_c)
    groups = B.shape[1] if B.dim() == 4 else 1
    B_steps, C_steps = _per_step(B.to(compute), dim), _per_step(C.to(compute), dim)
    view = (batch, groups, dim // groups)
    A_g = A_c.view(groups, dim // groups, -1)
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
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u_c * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    if return_last_state:
        return y, state.reshape(batch, dim, -1)
    return y


def _implementations() -> dict[str, Callable]:
    return {"ref": selective_scan_ref}


def resolve_backend(backend: str, u: torch.Tensor) -> str:
    """Map ``backend`` (one of :data:`BACKENDS`) to the implementation that will run on ``u``."""
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "ref"
    return backend


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
    impl = _implementations()[resolve_backend(backend, u)]
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
