"""Chunked selective scan for CPU: a two-level scan over blocks, with a backward that recomputes.

The sequence is cut into blocks of S = T * K steps whose (T, K, batch, groups, dim/groups, N) working
buffers fit in cache. Inside a block the recurrence ``h_t = a_t * h_{t-1} + b_t`` runs in two levels: T
steps scanning all K chunks at once, then K steps carrying the state across chunk ends, then one
vectorised correction ``h += cumprod(a) * carry``. The Python loop thus runs about 2·√S steps per block
instead of S (a per-step loop is dominated by interpreter overhead, see GUIDE.md), and no
(B, L, D, N) tensor ever exists: the forward saves only the state at each block start, and the
backward recomputes each block's states before running the adjoint recurrence
``lam_t = a_{t+1} * lam_{t+1} + C_t * dy_t`` with the same two-level scheme, in reverse.

Peak extra memory: four block buffers of ``S * batch * D * N`` elements (about 4 MiB each at the
default size) plus the block-start states, ``(L / S) * batch * D * N`` elements.
"""

from __future__ import annotations

import math

import torch

from seqpipe.kernels.selective_scan import compute_dtype, discretize, gate_output, scan_groups

# Elements of one block buffer: four of them (decay, cumulative decay, states, adjoints) sit in L3.
BLOCK_ELEMENTS = 1 << 20


def _block_shape(length: int, step_elements: int) -> tuple[int, int]:
    """(T, K) for blocks of T * K steps: T ≈ K ≈ √S so both Python loops are short."""
    steps = max(1, min(length, BLOCK_ELEMENTS // step_elements))
    chunk = max(1, math.isqrt(steps))
    return chunk, max(1, steps // chunk)


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(..., L) -> contiguous (L, ...), once per call, so each block's view reads whole channel rows."""
    return x.movedim(-1, 0).contiguous()


def _to_tk(x: torch.Tensor, T: int, K: int) -> torch.Tensor:
    """View time-major (T*K, ...) as (T, K, ...): time s = k * T + t."""
    return x.unflatten(0, (K, T)).transpose(0, 1)


def _from_tk(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_to_tk`: (T, K, ...) -> (T*K, ...)."""
    return x.transpose(0, 1).flatten(0, 1)


def _scan_forward(a: torch.Tensor, h: torch.Tensor, cum: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """In place, over (T, K, *state): h_t = a_t * h_{t-1} + h_t from h0; cum gets the in-chunk cumprod of a.

    Returns the state after the block (a view of h).
    """
    T, K = h.shape[:2]
    cum[0].copy_(a[0])
    for t in range(1, T):
        h[t].addcmul_(a[t], h[t - 1])
        torch.mul(a[t], cum[t - 1], out=cum[t])
    h[T - 1, 0].addcmul_(cum[T - 1, 0], h0)
    for k in range(1, K):
        h[T - 1, k].addcmul_(cum[T - 1, k], h[T - 1, k - 1])
    carry_in = torch.cat([h0.unsqueeze(0), h[T - 1, :-1]])  # state entering each chunk
    h[:-1].addcmul_(cum[:-1], carry_in)
    return h[T - 1, K - 1]


def _scan_reverse(a: torch.Tensor, lam: torch.Tensor, cum: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """In place, over (T, K, *state): lam_t = a_{t+1} * lam_{t+1} + lam_t, with a_{end+1} * lam_{end+1} = carry.

    ``cum`` is scratch (the in-chunk product of the a's after each step). Returns a_0 * lam_0, the
    gradient reaching the state before the block.
    """
    T, K = lam.shape[:2]
    cum[T - 1].fill_(1)
    for t in range(T - 2, -1, -1):
        lam[t].addcmul_(a[t + 1], lam[t + 1])
        torch.mul(a[t + 1], cum[t + 1], out=cum[t])
    carries = torch.empty_like(lam[0])  # gradient entering each chunk from its right
    carries[K - 1] = carry
    for k in range(K - 1, 0, -1):
        lam[0, k].addcmul_(cum[0, k], carries[k])
        torch.mul(a[0, k], lam[0, k], out=carries[k - 1])
    lam[0, 0].addcmul_(cum[0, 0], carries[0])
    lam[1:].addcmul_(cum[1:], carries)
    return a[0, 0] * lam[0, 0]


class _Layout:
    """Block views of the inputs: the state is (batch, G, D/G, N); B/C rows (batch, G or 1, 1, N).

    Inputs are copied time-major once (they are 1/N the size of the state), so a block is a view whose
    rows are contiguous runs of channels, and the broadcasting products read memory in order.
    """

    def __init__(self, u, dt, A, B, C):
        batch, dim, length = u.shape
        self.groups = scan_groups(B, C)
        self.state_shape = (batch, self.groups, dim // self.groups, A.shape[1])
        self.T, self.K = _block_shape(length, math.prod(self.state_shape))
        self.block = self.T * self.K
        self.A = A.view(self.state_shape[1:])
        self.u, self.dt = self.time_major(u), self.time_major(dt)
        self.B, self.C = (
            M.view(self.state_shape[1:]) if M.dim() == 2 else _time_major(M if M.dim() == 4 else M.unsqueeze(1))
            for M in (B, C)
        )

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, D, L) -> (L, batch, G, D/G)."""
        return _time_major(x.unflatten(1, self.state_shape[1:3]))

    def _block(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The block of time-major ``x`` at ``start`` as (T, K, ...), zero-padded past L."""
        piece = x[start : start + self.block]
        if piece.shape[0] < self.block:
            piece = torch.cat([piece, piece.new_zeros(self.block - piece.shape[0], *piece.shape[1:])])
        return _to_tk(piece, self.T, self.K)

    def channels(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Time-major (L, batch, G, D/G) -> (T, K, batch, G, D/G, 1) for the block at ``start``."""
        return self._block(x, start).unsqueeze(-1)

    def rows(self, M: torch.Tensor, start: int) -> torch.Tensor:
        """B or C for the block: (T, K, batch, G|1, 1, N), or (G, D/G, N) when time-invariant."""
        return M if M.dim() == 3 else self._block(M, start).unsqueeze(-2)

    def buffers(self, count: int) -> list[torch.Tensor]:
        return [self.u.new_empty(self.T, self.K, *self.state_shape) for _ in range(count)]

    def states(self, start: int, h0: torch.Tensor, a: torch.Tensor, h: torch.Tensor, cum: torch.Tensor):
        """Fill a with exp(dt * A) and h with the states of the block at ``start``; returns the last state."""
        dt = self.channels(self.dt, start)
        torch.mul(dt, self.A, out=a).exp_()
        torch.mul(dt * self.channels(self.u, start), self.rows(self.B, start), out=h)
        return _scan_forward(a, h, cum, h0)


def _contract(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """sum_n x[..., d, n] * M[..., n] -> (..., d, 1); M is a (..., 1, N) row or a (G, D/G, N) matrix."""
    if M.dim() == 3:
        return (x * M).sum(-1, keepdim=True)
    return torch.matmul(x, M.transpose(-1, -2))


def _row_grad(weights: torch.Tensor, x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Gradient for B or C rows from sum_d weights[..., d] * x[..., d, n], shaped like M's block view."""
    if M.dim() == 3:  # time-invariant: sum over time and batch
        return (weights * x).sum((0, 1, 2))
    grad = torch.matmul(weights.transpose(-1, -2), x)  # (T, K, batch, G, 1, N)
    return grad.sum(3, keepdim=True) if M.shape[3] == 1 else grad


class _ChunkedScan(torch.autograd.Function):
    """Core scan on compute-dtype tensors: (u, dt, A, B, C, h0) -> (y, last_state) without D, z."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0):
        layout = _Layout(u, dt, A, B, C)
        batch, dim, length = u.shape
        state = h0.view(layout.state_shape)
        a, h, cum = layout.buffers(3)
        starts = range(0, length, layout.block)
        block_states, ys = [], []
        for start in starts:
            block_states.append(state)
            state = layout.states(start, state, a, h, cum).clone()
            ys.append(_from_tk(_contract(h, layout.rows(layout.C, start)).squeeze(-1)))
        y = torch.cat(ys)[:length].movedim(0, -1).reshape(batch, dim, length)
        ctx.save_for_backward(u, dt, A, B, C, torch.stack(block_states))
        return y, state.reshape(batch, dim, -1)

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, dt, A, B, C, block_states = ctx.saved_tensors
        layout = _Layout(u, dt, A, B, C)
        batch, dim, length = u.shape
        a, x, cum, lam = layout.buffers(4)
        carry = grad_last.reshape(layout.state_shape).clone()
        grad_y = layout.time_major(grad_y)
        grads = {name: [] for name in ("u", "dt", "B", "C")}
        grad_A = torch.zeros_like(layout.A)
        for index in range(len(block_states) - 1, -1, -1):
            start = index * layout.block
            B_rows, C_rows = layout.rows(layout.B, start), layout.rows(layout.C, start)
            dt_b, u_b, g_b = (layout.channels(v, start) for v in (layout.dt, layout.u, grad_y))
            layout.states(start, block_states[index], a, x, cum)
            torch.mul(g_b, C_rows, out=lam)
            carry = _scan_reverse(a, lam, cum, carry)
            grads["C"].append(_row_grad(g_b, x, C_rows))
            dtu = dt_b * u_b
            decay_share = x.addcmul_(dtu, B_rows, value=-1).mul_(lam)  # lam_t * a_t * x_{t-1}
            lam_B = _contract(lam, B_rows)
            grads["dt"].append(torch.mul(decay_share, layout.A, out=cum).sum(-1, keepdim=True) + u_b * lam_B)
            grad_A += decay_share.mul_(dt_b).sum((0, 1, 2))
            grads["u"].append(dt_b * lam_B)
            grads["B"].append(_row_grad(dtu, lam, B_rows))

        def assemble(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
            """Per-block pieces, last block first, to a gradient shaped like ``like``.

            Pieces are (T, K, batch, G, X, Y) along time, or (G, D/G, N) sums for a time-invariant B or C.
            """
            if like.dim() == 2:
                return torch.stack(parts).sum(0).reshape(like.shape)
            return torch.cat([_from_tk(p) for p in reversed(parts)])[:length].movedim(0, -1).reshape(like.shape)

        grads_BC = [assemble(grads[name], M) for name, M in (("B", B), ("C", C))]
        return (assemble(grads["u"], u), assemble(grads["dt"], dt), grad_A.reshape(A.shape), *grads_BC,
                carry.reshape(batch, dim, -1))


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    return_last_state=False,
):
    """The "chunked" backend of :func:`seqpipe.kernels.selective_scan` (same arguments and shapes)."""
    compute = compute_dtype(u.dtype)
    batch, dim, _ = u.shape
    u_c = u.to(compute)
    dt = discretize(delta.to(compute), None if delta_bias is None else delta_bias.to(compute), delta_softplus)
    h0 = (
        u_c.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.to(compute)
    )
    y, last_state = _ChunkedScan.apply(u_c, dt, A.to(compute), B.to(compute), C.to(compute), h0)
    y = gate_output(y, u_c, None if D is None else D.to(compute), None if z is None else z.to(compute))
    y = y.to(u.dtype)
    return (y, last_state) if return_last_state else y
