"""Pieces shared by the selective scan (Mamba-1), its one-token update and SSD (Mamba-2), for every
backend: input checks, the compute dtype, discretisation of the step size, and the D skip with the SiLU gate.
The backends (scan_chunked, scan_triton, ssd_triton) import this module, never their dispatchers.

Layouts: the selective scan is channels-first, u, delta, z (B, D, L), D and delta_bias (D,); SSD is
time-major per head, x, z (B, L, H, P), dt (B, L, H), D and dt_bias (H,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_shapes(op: str, expected: dict[str, tuple[torch.Tensor | None, tuple[int, ...]]]) -> None:
    """Raise a ValueError naming the first of ``op``'s given tensors whose shape is not the expected one."""
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(tensor.shape)}")


def check_floating_on_one_device(op: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise a ValueError naming the first of ``op``'s given tensors that is not floating point or not on
    the device of the first tensor (its main input)."""
    main_name, main = next(iter(tensors.items()))
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"{op}: {name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.device != main.device:
            raise ValueError(f"{op}: {name} is on {tensor.device} but {main_name} is on {main.device}")


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
    """Raise a ValueError naming the selective_scan argument whose shape, dtype or device does not fit."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, d_state), got shape {tuple(A.shape)}")
    d_state = A.shape[1]
    expected = {"delta": (delta, (batch, dim, length)), "z": (z, (batch, dim, length)),
                "D": (D, (dim,)), "delta_bias": (delta_bias, (dim,)),
                "initial_state": (initial_state, (batch, dim, d_state))}
    check_shapes("selective_scan", expected)
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
    check_floating_on_one_device("selective_scan", tensors)


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


def discretize_heads(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool) -> torch.Tensor:
    """dt (B, L, H) [+ dt_bias (H,)], through softplus when asked."""
    if dt_bias is not None:
        dt = dt + dt_bias
    return F.softplus(dt) if dt_softplus else dt


def gate_heads(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """(y + D * x) * silu(z) for y, x, z of shape (B, L, H, P) and D of shape (H,)."""
    if D is not None:
        y = y + x * D.unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z)
    return y
