"""Chunked selective scan for CPU: a two-level scan over blocks, with a backward that recomputes.

The sequence is cut into blocks of S = T * K steps whose (T, K, batch, groups, N, dim/groups) working
buffers fit in cache. Inside a block the recurrence ``h_t = a_t * h_{t-1} + b_t`` runs in two levels: T
steps running all K chunks at once from a zero state, keeping only their end states; K steps carrying the
state across chunk ends (with the product of a over each chunk); then T steps writing the true states.
The Python loop thus runs about 3·√S steps per block instead of S (a per-step loop is dominated by
interpreter overhead, see GUIDE.md), and no (B, L, D, N) tensor ever exists: the forward saves the state
at each block start (and time-major copies of u and dt), and the backward recomputes each block's states
before running the adjoint recurrence ``lam_t = a_{t+1} * lam_{t+1} + C_t * dy_t`` with the same
two-level scheme, in reverse.

Peak extra memory: four block buffers of ``S * batch * D * N`` elements (about 2 MiB each at the
default size), the block-start states, ``(L / S) * batch * D * N`` elements, and the time-major u and
dt, ``2 * L * batch * D`` elements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from seqpipe.kernels.scan_common import compute_dtype, discretize, gate_output, scan_groups

Rows = Sequence[torch.Tensor]  # the T rows (K, *state) of a (T, K, *state) block buffer

# Elements of one block buffer: four of them (decays, states, adjoints, scratch) sit in L3; larger
# blocks measured slower, smaller ones pay more Python overhead per step.
BLOCK_ELEMENTS = 1 << 19


def _block_shape(length: int, step_elements: int) -> tuple[int, int]:
    """(T, K) for blocks of T * K steps: T ≈ K ≈ √S so both Python loops are short.

    S is a power of two, so blocks tile the usual power-of-two lengths without padding.
    """
    log_steps = max(1, min(length, BLOCK_ELEMENTS // step_elements)).bit_length() - 1
    chunk = 1 << (log_steps + 1) // 2
    return chunk, (1 << log_steps) // chunk


def _scan_forward(a: Rows, h: Rows, decay: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """In place, over T rows of (K, *state): h_t = a_t * h_{t-1} + h_t from h0; returns the state after the block.

    ``decay`` (K, *state) is the product of a over each chunk. A first pass runs all chunks from zero but
    keeps only their end states, the K-step loop turns those into the state entering each chunk, and a
    second pass writes the true states: two passes over the block and no cumulative-product buffer.
    """
    T, K = len(h), h[0].shape[0]
    end = h[0].clone()
    for t in range(1, T):
        torch.addcmul(h[t], a[t], end, out=end)
    carry_in = torch.empty_like(end)  # state entering each chunk
    ends, decays, carries = end.unbind(0), decay.unbind(0), carry_in.unbind(0)
    carries[0].copy_(h0)
    for k in range(1, K):
        torch.addcmul(ends[k - 1], decays[k - 1], carries[k - 1], out=carries[k])
    h[0].addcmul_(a[0], carry_in)
    for t in range(1, T):
        h[t].addcmul_(a[t], h[t - 1])
    return h[T - 1][K - 1]


def _scan_reverse(a: Rows, lam: Rows, decay: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """In place, over T rows of (K, *state): lam_t = a_{t+1} * lam_{t+1} + lam_t, with a_{end+1} * lam_{end+1} = carry.

    Two passes as in :func:`_scan_forward`, right to left. Returns a_0 * lam_0, the gradient reaching the
    state before the block.
    """
    T, K = len(lam), lam[0].shape[0]
    start = lam[T - 1].clone()
    for t in range(T - 2, -1, -1):
        torch.addcmul(lam[t], a[t + 1], start, out=start)
    start.mul_(a[0])  # a_0 * lam_0 of each chunk run from a zero carry
    carry_in = torch.empty_like(start)  # gradient entering each chunk from its right
    starts, decays, carries = start.unbind(0), decay.unbind(0), carry_in.unbind(0)
    carries[K - 1].copy_(carry)
    for k in range(K - 1, 0, -1):
        torch.addcmul(starts[k], decays[k], carries[k], out=carries[k - 1])
    lam[T - 1].add_(carry_in)
    for t in range(T - 2, -1, -1):
        lam[t].addcmul_(a[t + 1], lam[t + 1])
    return starts[0].addcmul_(decays[0], carries[0])


class _Layout:
    """Blocks of the inputs and outputs: the state is (batch, G, N, D/G); B/C rows (batch, G or 1, N, 1).

    Channels are innermost so every full-size pass runs over contiguous rows of D/G, broadcasting dt, u
    (over N) and B, C (over channels) along outer dims, and the sums over N add whole rows. Each block's
    inputs are transposed to time-major (T, K, ...) when it is used, and outputs back: a block-sized
    transpose stays in cache, a whole-sequence one does not (it cost more than the scan's passes).
    """

    def __init__(self, u, A, B, C):
        batch, dim, length = u.shape
        self.groups = scan_groups(B, C)
        self.state_shape = (batch, self.groups, A.shape[1], dim // self.groups)
        self.T, self.K = _block_shape(length, math.prod(self.state_shape))
        self.block = self.T * self.K
        self.starts = range(0, length, self.block)
        self.A = self.to_state(A)
        self.A_log2 = self.A * math.log2(math.e)  # exp(dt * A) as exp2(dt * A_log2): exp2 is ~30% faster

    def to_state(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D, N) -> contiguous (..., G, N, D/G)."""
        return x.unflatten(-2, (self.groups, -1)).transpose(-1, -2).contiguous()

    @staticmethod
    def from_state(x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_state`: (..., G, N, D/G) -> (..., D, N)."""
        return x.transpose(-1, -2).flatten(-3, -2)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """(..., L) -> (..., L') zero-padded to whole blocks (dt = 0 there leaves the state unchanged)."""
        extra = len(self.starts) * self.block - x.shape[-1]
        return torch.nn.functional.pad(x, (0, extra)) if extra else x

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, D, L) -> padded (batch, G, 1, D/G, L')."""
        return self._padded(x.unflatten(1, (self.groups, 1, -1)))

    def rows(self, M: torch.Tensor) -> torch.Tensor:
        """B or C: (batch, N, L) or (batch, G, N, L) -> padded (batch, G|1, N, 1, L'); (D, N) -> (G, N, D/G)."""
        if M.dim() == 2:
            return self.to_state(M)
        return self._padded((M if M.dim() == 4 else M.unsqueeze(1)).unsqueeze(-2))

    def block_of(self, x: torch.Tensor, start: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Padded (batch, X, Y, Z, L') -> contiguous (T, K, batch, X, Y, Z) block at ``start`` (into ``out``).

        A time-invariant (G, N, D/G) B or C is returned as is.
        """
        if x.dim() == 3:
            return x
        # copy the rows first, then transpose in cache: a direct transposing copy strides across all of x
        piece = x[..., start : start + self.block].contiguous().unflatten(-1, (self.K, self.T))
        piece = piece.permute(5, 4, 0, 1, 2, 3)
        return piece.contiguous() if out is None else out.copy_(piece)

    def new_blocks(self) -> torch.Tensor:
        """Empty (blocks, T, K, batch, G, 1, D/G): every block of a (batch, D, L) input, time-major."""
        batch, G, _, Dg = self.state_shape
        return self.A.new_empty(len(self.starts), self.T, self.K, batch, G, 1, Dg)

    def new_padded(self, like: torch.Tensor) -> torch.Tensor:
        """An empty tensor shaped like padded ``like`` to :meth:`store` blocks into."""
        return torch.empty_like(like, memory_format=torch.contiguous_format)

    def store(self, out: torch.Tensor, start: int, piece: torch.Tensor) -> None:
        """Write a (T, K, batch, X, Y, Z) block into padded (batch, X, Y, Z, L') ``out`` at ``start``."""
        rows = piece.permute(2, 3, 4, 5, 1, 0).contiguous().flatten(-2)  # transpose in cache, then write rows
        out[..., start : start + self.block].copy_(rows)

    @staticmethod
    def unpadded(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Padded ``out`` cut to L and shaped like ``like``."""
        return out[..., : like.shape[-1]].reshape(like.shape)

    def buffers(self, count: int) -> list[tuple[torch.Tensor, Rows]]:
        """Work buffers of (T, K, *state), each with its T rows unbound once: indexing costs as much as a step."""
        buffers = [self.A.new_empty(self.T, self.K, *self.state_shape) for _ in range(count)]
        return [(buffer, buffer.unbind(0)) for buffer in buffers]

    def discretize(self, dt, u, B, a, b) -> torch.Tensor:
        """Fill a with exp(dt * A) and b with dt * u * B; returns the product of a over each chunk (K, *state).

        dt, u: (T, K, batch, G, 1, D/G); B: (T, K, batch, G|1, N, 1) or (G, N, D/G); a, b: (T, K, *state).
        """
        torch.mul(dt, self.A_log2, out=a).exp2_()
        torch.mul(dt * u, B, out=b)
        return torch.prod(a, 0)


def _contract(x: torch.Tensor, M: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """sum_n x[..., n, d] * M[..., n, d|1] -> (..., 1, D/G), with ``scratch`` (shaped like x) for the product.

    A multiply and a sum of rows beat batched matmul here: bmm makes one small GEMM call per step.
    """
    return torch.mul(x, M, out=scratch).sum(-2, keepdim=True)


def _row_grad(weights: torch.Tensor, x: torch.Tensor, M: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Gradient for B or C from sum_d weights[..., 1, d] * x[..., n, d], shaped like M's block."""
    product = torch.mul(weights, x, out=scratch)
    if M.dim() == 3:  # time-invariant: sum over time and batch
        return product.sum((0, 1, 2))
    grad = product.sum(-1, keepdim=True)  # (T, K, batch, G, N, 1)
    return grad.sum(3, keepdim=True) if M.shape[3] == 1 else grad


class _ChunkedScan(torch.autograd.Function):
    """Core scan on compute-dtype tensors: (u, dt, A, B, C, h0) -> (y, last_state) without D, z."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0):
        layout = _Layout(u, A, B, C)
        u_p, dt_p, B_p, C_p = layout.channels(u), layout.channels(dt), layout.rows(B), layout.rows(C)
        state = layout.to_state(h0)
        (a, a_rows), (h, h_rows) = layout.buffers(2)
        y = layout.new_padded(u_p)
        # the backward reuses the time-major dt and u (1/N of a state's size each) rather than transposing again
        dt_blocks, u_blocks = layout.new_blocks(), layout.new_blocks()
        block_states = []
        for index, start in enumerate(layout.starts):
            block_states.append(state)
            dt_b, u_b = (layout.block_of(v, start, out[index]) for v, out in ((dt_p, dt_blocks), (u_p, u_blocks)))
            decay = layout.discretize(dt_b, u_b, layout.block_of(B_p, start), a, h)
            state = _scan_forward(a_rows, h_rows, decay, state).clone()
            layout.store(y, start, _contract(h, layout.block_of(C_p, start), a))
        ctx.save_for_backward(u, A, B, C, torch.stack(block_states), dt_blocks, u_blocks)
        return layout.unpadded(y, u), layout.from_state(state)

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, A, B, C, block_states, dt_blocks, u_blocks = ctx.saved_tensors
        layout = _Layout(u, A, B, C)
        g_p, B_p, C_p = layout.channels(grad_y), layout.rows(B), layout.rows(C)
        (a, a_rows), (x, x_rows), (lam, lam_rows), (scratch, _) = layout.buffers(4)
        carry = layout.to_state(grad_last)
        grad_u, grad_dt = layout.new_padded(g_p), layout.new_padded(g_p)
        # time-invariant B or C: per-block (G, N, D/G) sums; otherwise padded like B_p / C_p
        grad_rows = {name: [] if M.dim() == 3 else layout.new_padded(M) for name, M in (("B", B_p), ("C", C_p))}
        grad_A = torch.zeros_like(layout.A)
        for index in range(len(layout.starts) - 1, -1, -1):
            start = layout.starts[index]
            dt_b, u_b = dt_blocks[index], u_blocks[index]
            g_b, B_b, C_b = (layout.block_of(v, start) for v in (g_p, B_p, C_p))
            decay = layout.discretize(dt_b, u_b, B_b, a, x)
            _scan_forward(a_rows, x_rows, decay, block_states[index])
            torch.mul(g_b, C_b, out=lam)
            carry = _scan_reverse(a_rows, lam_rows, decay, carry)
            row_grads = {"C": _row_grad(g_b, x, C_b, scratch)}
            dtu = dt_b * u_b
            decay_share = x.addcmul_(dtu, B_b, value=-1).mul_(lam)  # lam_t * a_t * x_{t-1}
            lam_B = _contract(lam, B_b, scratch)
            layout.store(grad_dt, start, _contract(decay_share, layout.A, scratch).add_(u_b * lam_B))
            layout.store(grad_u, start, lam_B.mul_(dt_b))
            grad_A += decay_share.mul_(dt_b).sum((0, 1, 2))
            row_grads["B"] = _row_grad(dtu, lam, B_b, scratch)
            for name, grad in row_grads.items():
                if isinstance(grad_rows[name], list):
                    grad_rows[name].append(grad)
                else:
                    layout.store(grad_rows[name], start, grad)

        def finish(name: str, M: torch.Tensor) -> torch.Tensor:
            if M.dim() == 2:
                return layout.from_state(torch.stack(grad_rows[name]).sum(0))
            return layout.unpadded(grad_rows[name], M)

        return (layout.unpadded(grad_u, u), layout.unpadded(grad_dt, u), layout.from_state(grad_A),
                finish("B", B), finish("C", C), layout.from_state(carry))


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
