"""One token of the selective scan: the state update behind ``MambaBlock.step``.

Shapes: state (B, D, N); x, dt, z (B, D); A (D, N); B, C (B, N) or grouped (B, G, N); D, dt_bias (D,).
Returns y (B, D) in x's dtype and a new state (B, D, N) in the state's dtype; the input state is never
modified (the streaming protocol treats states as values).
"""

from __future__ import annotations

import torch

from seqpipe.kernels.backends import resolve_backend
from seqpipe.kernels.scan_common import (
    check_floating_on_one_device, check_shapes, compute_dtype, discretize, gate_output,
)

STEP_BACKENDS = ("ref", "triton", "auto")


def check_step_inputs(state, x, dt, A, B, C, D, z, dt_bias) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or device does not fit."""
    if state.dim() != 3:
        raise ValueError(f"selective_state_update: state must be (batch, dim, d_state), got {tuple(state.shape)}")
    batch, dim, d_state = state.shape
    expected = {"x": (x, (batch, dim)), "dt": (dt, (batch, dim)), "z": (z, (batch, dim)), "A": (A, (dim, d_state)),
                "D": (D, (dim,)), "dt_bias": (dt_bias, (dim,))}
    check_shapes("selective_state_update", expected)
    for name, M in (("B", B), ("C", C)):
        grouped = M.dim() == 3 and M.shape[0] == batch and M.shape[2] == d_state and dim % M.shape[1] == 0
        if not (grouped or tuple(M.shape) == (batch, d_state)):
            raise ValueError(
                f"selective_state_update: {name} must be ({batch}, {d_state}) or (batch, groups, {d_state}) with "
                f"groups dividing dim={dim}; got {tuple(M.shape)}"
            )
    tensors = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "dt_bias": dt_bias}
    check_floating_on_one_device("selective_state_update", tensors)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Pure-PyTorch state update in float32 (float64 for float64 inputs); differentiable."""
    compute = compute_dtype(x.dtype)
    batch, dim, d_state = state.shape
    groups = B.shape[1] if B.dim() == 3 else C.shape[1] if C.dim() == 3 else 1

    def per_group(M: torch.Tensor) -> torch.Tensor:  # (B, N) or (B, G, N) -> (B, G, 1, N)
        return (M.unsqueeze(1) if M.dim() == 2 else M).unsqueeze(2).to(compute)

    x_c = x.to(compute)
    dt_c = discretize(dt.to(compute), None if dt_bias is None else dt_bias.to(compute), dt_softplus)
    view = (batch, groups, dim // groups, 1)
    decay = torch.exp(dt_c.view(view) * A.to(compute).view(groups, dim // groups, d_state))
    new_state = state.to(compute).view(*view[:3], d_state) * decay + (dt_c * x_c).view(view) * per_group(B)
    y = (new_state * per_group(C)).sum(-1).reshape(batch, dim)
    y = gate_output(y, x_c, None if D is None else D.to(compute), None if z is None else z.to(compute))
    return y.to(x.dtype), new_state.reshape(batch, dim, d_state).to(state.dtype)


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance ``state`` by one token; see the module docstring for shapes.

    ``backend``: "ref" (PyTorch, differentiable), "triton" (fused kernel, inference only: no autograd), or
    "auto" (triton for CUDA tensors outside autograd, ref otherwise).
    """
    check_step_inputs(state, x, dt, A, B, C, D, z, dt_bias)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (state, x, dt, A, B, C, D, z, dt_bias)
    )
    if backend == "auto" and needs_grad:
        backend = "ref"  # the fused kernel has no backward
    chosen = resolve_backend(backend, x, "selective_state_update", "x", STEP_BACKENDS, cpu_backend="ref")
    if chosen == "triton":
        if needs_grad:
            raise ValueError("selective_state_update: backend='triton' has no backward; use backend='ref' "
                             "or call under torch.no_grad()")
        from seqpipe.kernels.scan_triton import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
