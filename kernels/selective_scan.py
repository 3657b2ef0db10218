"""Selective scan (Mamba's S6): shared input handling, the reference step loop, and the dispatcher.

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

import os
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
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B and C must have the same groups, got {B.shape[1]} and {C.shape[1]}")
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias,
               "initial_state": initial_state}
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"selective_scan: {name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {tensor.device} but u is on {u.device}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The state and accumulation dtype for inputs of ``dtype``: float64 stays, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def discretize(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """dt = softplus(delta + delta_bias) (softplus when asked); delta is (B, D, ...) and delta_bias (D,)."""
    if delta_bias is not None:
        delta = delta + delta_bias.view(-1, *([1] * (delta.dim() - 2)))
    return F.softplus(delta) if delta_softplus else delta


def gate_output(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """(y + D * u) * silu(z) for y, u, z of shape (B, D, ...) and D of shape (D,)."""
    if D is not None:
        y = y + u * D.view(-1, *([1] * (u.dim() - 2)))
    if z is not None:
        y = y * F.silu(z)
    return y


def scan_groups(B: torch.Tensor, C: torch.Tensor) -> int:
    """Number of B/C groups: channels are split into this many contiguous groups sharing B and C."""
    return next((M.shape[1] for M in (B, C) if M.dim() == 4), 1)


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


def triton_available_for(u: torch.Tensor) -> bool:
    """Whether the Triton backend can run on ``u``: a CUDA tensor, or any tensor under TRITON_INTERPRET=1."""
    return u.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _implementations() -> dict[str, Callable]:
    # Imported here: the fast backends import this module for the shared helpers above.
    from seqpipe.kernels.scan_chunked import selective_scan_chunked

    def triton_scan(*args):
        from seqpipe.kernels.scan_triton import selective_scan_triton  # triton is optional (e.g. macOS)

        return selective_scan_triton(*args)

    return {"ref": selective_scan_ref, "chunked": selective_scan_chunked, "triton": triton_scan}


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, u: torch.Tensor, op: str = "selective_scan", name: str = "u") -> str:
    """Map ``backend`` (one of :data:`BACKENDS`) to the implementation that will run on ``u``, the input of ``op``
    called ``name`` there (for the messages; :func:`seqpipe.kernels.ssd.ssd_scan` uses it too).

    "auto" is "triton" for CUDA tensors when triton is installed, "chunked" otherwise. Asking for "triton"
    where it cannot run is an error, never a silent fallback.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if u.is_cuda and triton_importable() else "chunked"
    if backend == "triton" and not triton_available_for(u):
        raise ValueError(
            f"{op}: backend='triton' needs CUDA tensors ({name} is on {u.device}); on CPU use "
            "backend='chunked', or set TRITON_INTERPRET=1 before importing triton to run the kernels interpreted"
        )
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
