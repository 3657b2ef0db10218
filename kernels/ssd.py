"""State space duality (SSD, Mamba-2's layer): a selective scan with one scalar decay per head.

Shapes follow ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``, so results can be checked
against it:

    x: (B, L, H, P)    dt: (B, L, H)    A: (H,)    B, C: (B, L, G, N), G dividing H
    D, dt_bias: (H,)   z: (B, L, H, P)  initial_state: (B, H, P, N)
    returns y (B, L, H, P) [, final_state (B, H, P, N)]

Recurrence per head h (state h_t of shape (P, N)), heads split into G contiguous groups sharing B and C,
with dt = softplus(dt + dt_bias) when asked:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        y_t = h_t C_t + D * x_t,  y_t *= silu(z_t)

This is the Mamba-1 scan with A, dt and D shared by the P channels of a head, which is what lets the
chunked form run on matrix units: inside a chunk of T steps, ``y = (C B^T ∘ decay ∘ dt) x`` is two matrix
products per head, and only one (P, N) state per head passes from chunk to chunk.

Every backend computes in float32 (float64 for float64 inputs), returns y in x's dtype and the final
state in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqpipe.kernels.backends import resolve_backend
from seqpipe.kernels.scan_common import (
    check_floating_on_one_device, check_shapes, compute_dtype, discretize_heads, gate_heads,
)
from seqpipe.kernels.selective_scan import selective_scan_ref


def check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, initial_state) -> None:
    """Raise a ValueError naming the argument whose shape, dtype or device does not fit."""
    if x.dim() != 4:
        raise ValueError(f"ssd_scan: x must be (batch, length, heads, head_dim), got shape {tuple(x.shape)}")
    batch, length, heads, head_dim = x.shape
    if B.dim() != 4 or B.shape[:2] != (batch, length) or heads % B.shape[2] != 0:
        raise ValueError(
            f"ssd_scan: B must be ({batch}, {length}, groups, d_state) with groups dividing heads={heads}, "
            f"got shape {tuple(B.shape)}"
        )
    groups, d_state = B.shape[2:]
    expected = {"dt": (dt, (batch, length, heads)), "A": (A, (heads,)), "C": (C, (batch, length, groups, d_state)),
                "D": (D, (heads,)), "z": (z, (batch, length, heads, head_dim)), "dt_bias": (dt_bias, (heads,)),
                "initial_state": (initial_state, (batch, heads, head_dim, d_state))}
    check_shapes("ssd_scan", expected)
    tensors = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "dt_bias": dt_bias,
               "initial_state": initial_state}
    check_floating_on_one_device("ssd_scan", tensors)


def ssd_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_state=None,
                 return_final_state=False):
    """Step-loop reference: the Mamba-1 reference scan over H*P channels with per-head parameters repeated.

    Exact in float64; linear in L for forward and backward.
    """
    batch, length, heads, head_dim = x.shape
    d_state = B.shape[-1]
    channels = heads * head_dim

    def per_channel(t: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H*P)
        return t.repeat_interleave(head_dim, dim=-1)

    def channels_first(t: torch.Tensor) -> torch.Tensor:  # (B, L, H, P) -> (B, H*P, L)
        return t.reshape(batch, length, channels).transpose(1, 2)

    y, state = selective_scan_ref(
        channels_first(x), per_channel(dt).transpose(1, 2), per_channel(A).unsqueeze(-1).expand(channels, d_state),
        B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1),
        None if D is None else per_channel(D), None if z is None else channels_first(z),
        None if dt_bias is None else per_channel(dt_bias), dt_softplus,
        None if initial_state is None else initial_state.reshape(batch, channels, d_state), return_last_state=True,
    )
    y = y.transpose(1, 2).reshape(batch, length, heads, head_dim)
    if return_final_state:
        return y, state.reshape(batch, heads, head_dim, d_state)
    return y


def ssd_scan_chunked(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_state=None,
                     return_final_state=False, chunk_size=64):
    """The chunked (matrix) form in PyTorch: the CPU path, and the autograd twin of the Triton kernels.

    Per chunk of T steps: intra-chunk outputs ``(C B^T ∘ decay ∘ dt) x`` and the chunk's own end state
    ``(x ∘ dt ∘ decay_to_end)^T B``; then a loop over the L/T chunks carries the states; then each chunk
    adds ``C S_start ∘ decay_from_start``. Memory O(B L T H) for the T×T decay matrices.
    """
    compute = compute_dtype(x.dtype)
    batch, length, heads, head_dim = x.shape
    groups, d_state = B.shape[2:]
    per_group = heads // groups
    n_chunks = -(-length // chunk_size)
    pad = n_chunks * chunk_size - length
    x_c = x.to(compute)
    dt_c = discretize_heads(dt.to(compute), None if dt_bias is None else dt_bias.to(compute), dt_softplus)

    def chunks(t: torch.Tensor, *inner: int) -> torch.Tensor:
        # dt = 0 and x = 0 on the padding: the state passes through it unchanged
        t = F.pad(t.to(compute), (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(batch, n_chunks, chunk_size, *inner)

    xs = chunks(x_c, groups, per_group, head_dim)                   # (b, c, T, g, k, p)
    dts = chunks(dt_c, groups, per_group).permute(0, 1, 3, 4, 2)    # (b, c, g, k, T)
    Bs, Cs = chunks(B, groups, d_state), chunks(C, groups, d_state)  # (b, c, T, g, n)
    log_decay = torch.cumsum(dts * A.to(compute).view(groups, per_group, 1), dim=-1)  # (b, c, g, k, T)

    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    segment = (log_decay.unsqueeze(-1) - log_decay.unsqueeze(-2)).masked_fill(~causal, -torch.inf)
    weights = torch.einsum("bcign,bcjgn->bcgij", Cs, Bs).unsqueeze(3) * segment.exp() * dts.unsqueeze(-2)
    y = torch.einsum("bcgkij,bcjgkp->bcigkp", weights, xs)

    decay_to_end = torch.exp(log_decay[..., -1:] - log_decay) * dts       # (b, c, g, k, T)
    chunk_states = torch.einsum("bcgkj,bcjgkp,bcjgn->bcgkpn", decay_to_end, xs, Bs)
    state = (
        x_c.new_zeros(batch, groups, per_group, head_dim, d_state)
        if initial_state is None
        else initial_state.to(compute).reshape(batch, groups, per_group, head_dim, d_state)
    )
    start_states = []
    # unbind keeps the backward of this loop linear in the number of chunks
    for own, total in zip(chunk_states.unbind(1), log_decay[..., -1].exp().unbind(1)):
        start_states.append(state)
        state = state * total[..., None, None] + own
    start_states = torch.stack(start_states, dim=1)                       # (b, c, g, k, p, n)
    y = y + torch.einsum("bcign,bcgkpn->bcigkp", Cs, start_states) * log_decay.exp().permute(0, 1, 4, 2, 3).unsqueeze(-1)

    y = y.reshape(batch, n_chunks * chunk_size, heads, head_dim)[:, :length]
    y = gate_heads(y, x_c, None if D is None else D.to(compute), None if z is None else z.to(compute)).to(x.dtype)
    if return_final_state:
        return y, state.reshape(batch, heads, head_dim, d_state)
    return y


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD scan; see the module docstring for shapes.

    ``backend``: "ref" (step loop), "chunked" (PyTorch matrix form), "triton" (GPU, or CPU under
    ``TRITON_INTERPRET=1``), or "auto" (triton on CUDA tensors when triton imports, chunked otherwise). ``chunk_size`` is T of
    the chunked forms ("triton" rounds it up to a power of two >= 16); it changes rounding only.
    """
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, initial_state)
    if chunk_size < 1:
        raise ValueError(f"ssd_scan: chunk_size must be positive, got {chunk_size}")
    backend = resolve_backend(backend, x, "ssd_scan", "x")
    args = (x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, return_final_state)
    if backend == "ref":
        return ssd_scan_ref(*args)
    if backend == "chunked":
        return ssd_scan_chunked(*args, chunk_size=chunk_size)
    from seqpipe.kernels.ssd_triton import ssd_scan_triton  # triton is optional (e.g. macOS)

    return ssd_scan_triton(*args, chunk_size=chunk_size)
