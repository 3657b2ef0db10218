"""Triton SSD (Mamba-2) scan: chunked forward and backward whose intra-chunk work is matrix products.

Imported only when the "triton" backend is asked for: ``import seqpipe.kernels`` works without triton.

One program owns one chunk of T steps of one (batch row, head) (the separate dB/dC launch: of BC_HEADS heads of
a group), with all P channels and N states:

forward   1. ``_chunk_state_kernel``: a = cumsum(dt * A) over the chunk; the chunk's own end state
             ``(x ∘ dt e^{a_T - a})^T B`` (P, N).
          2. ``_pass_states_kernel``: a sequential pass over chunks, ``S_{c+1} = e^{a_T} S_c + own_c``,
             overwriting each own state with the state at the chunk's start (for 16-bit inputs from N =
             SPLIT_GRAD_FROM_N on, writing those to a copy in the input dtype: PASSED_STATES_16BIT);
             PASS_CHUNKS chunks a step (their loads in flight together, combined by a scan; see PASS_WARPS).
          3. ``_chunk_output_kernel``: ``y = (C B^T ∘ e^{a_i - a_j}[i>=j] ∘ dt_j) x + e^{a} ∘ C S^T + D x``,
             gated by silu(z).
backward  4. ``_chunk_state_grad_kernel``: the gradient reaching each chunk's start state from its outputs,
             ``(g ∘ e^{a})^T C`` with g = dy ∘ silu(z).
          2. the same pass in reverse, giving the gradient of each chunk's end state (and of initial_state).
          5. ``_chunk_grad_kernel``: recomputes the chunk's products and writes dx, ddt, dz and per-chunk partial
             sums of dD and dA, walking the P channels GRAD_BLOCK_P at a time; with per-head dB, dC in the same
             launch, or (from N = SPLIT_GRAD_FROM_N on, or when one launch does not fit the GPU's shared memory)
             ``_chunk_grad_bc_kernel`` after it, whose programs sum dB, dC over BC_HEADS heads of a group.
Products accumulate in fp32 (float64 for float64 inputs); their operands are tf32 for 32-bit inputs, and for
16-bit inputs with DOTS_16BIT (on CUDA) the input dtype, as in mamba_ssm (at 8 warps, those with an N-wide right
operand stay fp32: see ``_narrow_dot``). Where the gradient kernel also uses an operand
elementwise, it uses the value the product reads (``_as_dot_reads``), so that sums that cancel do.
The partial dB/dC are summed over the rest of a group's heads, and dD/dA over chunks and batch, by PyTorch:
deterministic, no atomics. dt arrives discretised (softplus and bias stay in PyTorch autograd, O(B L H)).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from seqpipe.kernels.scan_common import compute_dtype, discretize_heads
from seqpipe.kernels.scan_triton import linear_combine

PASS_BLOCK = 128  # (P * N) state elements per program of the sequential pass
# warps per program of the pass: one warp per 128 elements, so that each thread holds its 4 contiguous elements (what
# Triton loads a thread) of every chunk of a step and the scan over chunks stays within threads. At 4 warps the
# warps split the chunks and the scan went through shared memory (sm_90 SASS, session 19: 131 shared loads a step).
# One H200 run (session 20, bench/ssd_launches.py, the pass forward and back, 128 x 4 -> 128 x 1): N 128 B4 L8k
# 0.96 -> 0.57 ms, B1 L64k 1.97 -> 1.13, N 16 B1 L64k 0.28 -> 0.18; 256 x 2 and 512 x 4 were within 10% of 128 x 1
PASS_WARPS = 1
# chunks (a power of two) whose loads the sequential pass keeps in flight at once, combined by a scan (1: one after
# the other, as before; at B1 L64k, T 64, each program walks 1,024 chunks, ~0.4 us a chunk on the H200). 16 against
# 8, one H200 run (session 19, bench/ssd_launches.py, the pass forward and back, B4 L8k / B1 L64k): N 128 0.95 / 1.95
# against 1.21 / 2.47 ms, N 16 0.14 / 0.28 against 0.18 / 0.36; 32 was no faster than 16 (bench/RESULTS.md)
PASS_CHUNKS = 16
# per program: on the H200, fp32 inputs at 4 warps beat 8 at B4 L8k and B1 L64k in two runs of session 8/9 (fwd+bwd
# 3.68 / 3.64 against 3.90 / 3.87 ms and 7.44 / 7.37 against 7.95 / 7.86; at B4 L2k once faster, once slower: 1.02 /
# 1.21 against 1.08), and bf16 with 16-bit products ran at 4 and crashed at 8 (``_narrow_dot``; bench/RESULTS.md)
NUM_WARPS = 4
# The gradient kernel as two launches (dx/dz/ddt, then dB/dC) needs fewer registers (fused: 255, spilling, at
# every T on sm_90a). At N 16 one launch was faster on the H200 at 4 of the 5 benchmark shapes; from N 64 two were,
# but for a tie at B1 L64k bf16 N 128 (session 17, fwd+bwd ms, two against one: B4 L8k bf16 N 64 2.98 / 3.14,
# N 128 5.47 / 5.70, N 128 bf16 read as fp32 operands 8.82 / 10.79; B1 L64k bf16 N 64 6.12 / 6.32, N 128 11.69 /
# 11.60; bench/RESULTS.md). fp32 inputs at N 128 with z took two already: one launch does not fit (below).
SPLIT_GRAD_FROM_N = 64  # two launches from this state width on (0: at every N)
# heads of one group whose dB, dC one program of the separate dB/dC launch sums (the rest summed by PyTorch): the
# heads share B and C, so the products with them and the stores are made once for all of them (1: one head a
# program, as before). One H200 run (session 20, bench/ssd_launches.py, fwd+bwd ms, 32 heads, B4 L8k / B1 L64k, 1 ->
# 8 -> 32 heads): fp32 N 128 7.66 / 15.86 -> 7.00 / 14.50 -> 6.91 / 14.30, bf16 N 128 4.35 / 9.11 -> 3.95 / 8.22 ->
# 3.89 / 8.08, N 64 likewise; at B4 L2k N 128, 2.07 -> 1.92 -> 2.03. 8 warps a program were slower (bench/RESULTS.md)
BC_HEADS = 32
BC_WARPS = 4  # warps per program of that launch
# channels per step of the gradient kernel's loop over P (a power of two >= 16). 16 against 32, one H200 run
# (session 19, fwd+bwd ms, B4 L8k / B1 L64k): fp32 N 16 2.65 / 5.38 against 2.96 / 5.99 (one launch: 34 registers
# spilled against 156), N 128 7.69 / 16.02 against 9.07 / 18.67, bf16 N 128 4.33 / 9.14 against 5.19 / 11.12; only
# bf16 N 16 was 3-6% slower, 1.87 / 3.68 against 1.76 / 3.54 (bench/RESULTS.md)
GRAD_BLOCK_P = 16
# Triton's num_stages for the two gradient launches of 32-bit inputs (None: Triton's default): fewer buffered loads
# free shared memory and registers for their wide fp32 tiles. fp32 N 128, one H200 run (session 19, fwd+bwd ms, B4 L8k
# / B1 L64k): 1 stage 7.72 / 15.98, 2 stages 7.99 / 16.52, the default 8.80 / 18.25 (shared memory of the then
# per-head dB/dC launch 88 KiB against 140); for one launch (fp32 N 16: 3.04 / 6.14 against 2.66 / 5.38) and for bf16
# (N 128: 4.75 / 9.77 against 4.35 / 9.15) the default was faster. N 64 (two launches too) was not timed
SPLIT_GRAD_STAGES_32BIT: int | None = 1
# Whether tl.dot reads 32-bit operands as tf32 (so that the gradient kernel rounds the operands it also uses
# elementwise): None means on CUDA; the interpreter's tl.dot is exact fp32 (a test that makes it read tf32 sets True).
TF32_DOTS: bool | None = None
# Whether the products of 16-bit inputs take 16-bit operands (x, B, C, g and the (T, T) tiles cast to the input
# dtype just before tl.dot, fp32 accumulation, as mamba_ssm does: twice the tensor-core rate of tf32, half the
# operand registers) rather than fp32 ones read as tf32. None means on CUDA: the interpreter's tl.dot multiplies
# bf16 operands' raw bits (triton 3.6; a test that makes it convert them sets True). On the H200, B1 L64k bf16
# fwd+bwd: 5.52 against 7.54 ms at N 16 (session 9); at N 64 4.99 ms, where fp32 operands with the unrolled loops
# of before took 9.22 (bench/RESULTS.md).
DOTS_16BIT: bool | None = None
# Whether 16-bit inputs' passed states (the chunks' start states and end-state gradients) are stored in the input
# dtype where the gradients run as two launches (see _passed_dtype). On the H200 at N 128, bf16 fwd+bwd: B4 L8k
# 3.52 -> 3.04 ms, B1 L64k 7.26 -> 6.28 (the dB/dC launch 0.71 -> 0.47 ms at B4 L8k; bench/RESULTS.md, session 23).
PASSED_STATES_16BIT = True
_DOT_16BIT = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
_Result = TypeVar("_Result")


@triton.jit
def _chunk_coords(L, H, G, T: tl.constexpr):
    """This program's chunk, batch row, head, group, time indices and their mask."""
    chunk = tl.program_id(0)
    batch = tl.program_id(1) // H
    head = tl.program_id(1) % H
    group = head // (H // G)
    t = chunk * T + tl.arange(0, T)
    return chunk, batch, head, group, t, t < L


@triton.jit
def _heads_coords(L, H, G, T: tl.constexpr, HEADS: tl.constexpr):
    """For a program over HEADS heads of one group (grid (n_chunks, B * G * splits)): its chunk, batch row, group,
    slot (group * splits + split) among G * splits, first and past-last head, and the chunk's time indices and their
    mask."""
    chunk = tl.program_id(0)
    heads_per_group = H // G
    splits = tl.cdiv(heads_per_group, HEADS)
    batch = tl.program_id(1) // (G * splits)
    slot = tl.program_id(1) % (G * splits)
    group = slot // splits
    first = group * heads_per_group + (slot % splits) * HEADS
    t = chunk * T + tl.arange(0, T)
    last = tl.minimum(first + HEADS, (group + 1) * heads_per_group)
    return chunk, batch, group, slot, G * splits, first, last, t, t < L


@triton.jit
def _load_rows(ptr, batch, t, mask_t, L, width, index, col, mask_col, cols, COMPUTE: tl.constexpr):
    """Rows of a (B, L, width, cols) tensor at [batch, t, index, :] as a (T, BLOCK) tile, zeros where masked."""
    offsets = ((batch * L + t[:, None]) * width + index) * cols + col[None, :]
    return tl.load(ptr + offsets, mask=mask_t[:, None] & mask_col[None, :], other=0).to(COMPUTE)


@triton.jit
def _store_rows(ptr, value, batch, t, mask_t, L, width, index, col, mask_col, cols):
    offsets = ((batch * L + t[:, None]) * width + index) * cols + col[None, :]
    tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=mask_t[:, None] & mask_col[None, :])


@triton.jit
def _state_offsets(batch, chunk, head, n_chunks, H, p, n, P, N):
    """Offsets of a (P, N) tile in a (B, n_chunks, H, P, N) tensor, and its mask."""
    offsets = (((batch * n_chunks + chunk) * H + head) * P + p[:, None]) * N + n[None, :]
    return offsets, (p[:, None] < P) & (n[None, :] < N)


@triton.jit
def _dot(a, b, DOT: tl.constexpr, PRECISION: tl.constexpr):
    """a b accumulated in fp32 (float64 for float64), its operands cast to DOT (the 16-bit input dtype or COMPUTE)."""
    return tl.dot(a.to(DOT), b.to(DOT), input_precision=PRECISION)


@triton.jit
def _chunk_state_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, states_ptr, log_decay_ptr, L, H, G, P, N, n_chunks,
                        T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, COMPUTE: tl.constexpr,
                        DOT: tl.constexpr, PRECISION: tl.constexpr):
    chunk, batch, head, group, t, mask_t = _chunk_coords(L, H, G, T)
    p, n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    dt = tl.load(dt_ptr + (batch * L + t) * H + head, mask=mask_t, other=0).to(COMPUTE)  # 0 on padding: no decay
    a = tl.cumsum(dt * tl.load(A_ptr + head).to(COMPUTE), axis=0)
    tl.store(log_decay_ptr + (batch * H + head) * n_chunks * T + t, a)
    weight = dt * tl.exp(tl.sum(tl.where(tl.arange(0, T) == T - 1, a, 0), axis=0) - a)
    x = _load_rows(x_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
    B = _load_rows(B_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    own = _dot(tl.trans(x * weight[:, None]), B, DOT, PRECISION)
    offsets, mask = _state_offsets(batch, chunk, head, n_chunks, H, p, n, P, N)
    tl.store(states_ptr + offsets, own, mask=mask)


@triton.jit
def _pass_chunks(states_ptr, log_decay_ptr, bh, H, PN, n_chunks, e, mask, k, T: tl.constexpr,
                 CHUNKS: tl.constexpr, REVERSE: tl.constexpr):
    """Chunks k, ..., k + CHUNKS - 1 of the pass (counted from the last one when REVERSE): the (CHUNKS, BLOCK)
    offsets of their states, their states and their decays e^{a_T} (CHUNKS,); past the end, states 0 and decays 1."""
    steps = k + tl.arange(0, CHUNKS)
    chunk = n_chunks - 1 - steps if REVERSE else steps
    valid = steps < n_chunks
    offsets = (((bh // H) * n_chunks + chunk[:, None]) * H + bh % H) * PN + e[None, :]
    states = tl.load(states_ptr + offsets, mask=valid[:, None] & mask[None, :], other=0)
    return offsets, states, tl.exp(tl.load(log_decay_ptr + (bh * n_chunks + chunk) * T + T - 1, mask=valid, other=0))


@triton.jit
def _pass_states_kernel(states_ptr, passed_ptr, log_decay_ptr, init_ptr, final_ptr, H, PN, n_chunks, T: tl.constexpr,
                        BLOCK: tl.constexpr, CHUNKS: tl.constexpr, HAS_INIT: tl.constexpr, REVERSE: tl.constexpr,
                        COMPUTE: tl.constexpr):
    """Forward: ``S_{c+1} = e^{a_T,c} S_c + own_c``, storing S_c in ``passed`` at own_c's place (``passed`` may be
    ``states``, or a 16-bit copy). Reverse (the adjoint): ``dS_c = e^{a_T,c} dS_{c+1} + from_y_c``, storing dS_{c+1}
    at from_y_c's place. ``final`` gets S_end / dS_0 in COMPUTE.
    CHUNKS chunks a step: their loads are in flight together, then a scan combines them (within each thread at
    PASS_WARPS = PASS_BLOCK / 128)."""
    bh = tl.program_id(0)
    e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = e < PN
    carry = tl.load(init_ptr + bh * PN + e, mask=mask, other=0).to(COMPUTE) if HAS_INIT else tl.zeros([BLOCK], COMPUTE)
    rows = tl.arange(0, CHUNKS)[:, None]
    to_next = (-1 if REVERSE else 1) * H * PN                                   # offset of the next chunk's state
    # The loads of step k + 1 are issued before step k is combined, so their latency overlaps the combine's.
    offsets, incoming, decay = _pass_chunks(states_ptr, log_decay_ptr, bh, H, PN, n_chunks, e, mask, 0, T, CHUNKS,
                                            REVERSE)
    k = 0
    while k < n_chunks:  # not range(): triton 3.6's interpreter fails on a runtime bound with numpy >= 2.4
        next_offsets, next_incoming, next_decay = _pass_chunks(states_ptr, log_decay_ptr, bh, H, PN, n_chunks, e,
                                                               mask, k + CHUNKS, T, CHUNKS, REVERSE)
        # the state after each chunk (past the end: the last one, carried on), stored as the next chunk's start;
        # the step's first chunk starts with the carry
        decays, values = tl.associative_scan((tl.broadcast_to(decay[:, None], (CHUNKS, BLOCK)), incoming), 0,
                                             linear_combine)
        ends = decays * carry[None, :] + values
        # stored 4 elements a thread, as the 32-bit states are loaded: a 16-bit store left to its widest vectors (8)
        # takes another layout, a conversion through warp shuffles every step (sm_90 SASS: 151 SHFL at 128 x 1)
        tl.store(passed_ptr + tl.max_contiguous(offsets + to_next, [1, 4]), ends.to(passed_ptr.dtype.element_ty),
                 mask=(rows < CHUNKS - 1) & (k + 1 + rows < n_chunks) & mask)
        tl.store(passed_ptr + tl.sum(tl.where(rows == 0, offsets, 0), axis=0), carry.to(passed_ptr.dtype.element_ty),
                 mask=mask)
        carry = tl.sum(tl.where(rows == CHUNKS - 1, ends, 0), axis=0)
        offsets, incoming, decay = next_offsets, next_incoming, next_decay
        k += CHUNKS
    tl.store(final_ptr + bh * PN + e, carry, mask=mask)


@triton.jit
def _causal_decay(a, T: tl.constexpr):
    """The (T, T) causal decay e^{a_i - a_j} for i >= j, else 0."""
    steps = tl.arange(0, T)
    causal = steps[:, None] >= steps[None, :]
    return tl.where(causal, tl.exp(tl.where(causal, a[:, None] - a[None, :], 0)), 0)


@triton.jit
def _chunk_output_kernel(x_ptr, dt_ptr, B_ptr, C_ptr, D_ptr, z_ptr, starts_ptr, log_decay_ptr, y_ptr, L, H, G, P, N,
                         n_chunks, T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                         HAS_D: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr, DOT: tl.constexpr,
                         PRECISION: tl.constexpr):
    chunk, batch, head, group, t, mask_t = _chunk_coords(L, H, G, T)
    p, n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    dt = tl.load(dt_ptr + (batch * L + t) * H + head, mask=mask_t, other=0).to(COMPUTE)
    a = tl.load(log_decay_ptr + (batch * H + head) * n_chunks * T + t)
    x = _load_rows(x_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
    B = _load_rows(B_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    C = _load_rows(C_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    offsets, mask = _state_offsets(batch, chunk, head, n_chunks, H, p, n, P, N)
    start = tl.load(starts_ptr + offsets, mask=mask, other=0).to(COMPUTE)
    CB = _dot(C, tl.trans(B), DOT, PRECISION)
    y = _dot(CB * _causal_decay(a, T) * dt[None, :], x, DOT, PRECISION)
    y += tl.exp(a)[:, None] * _dot(C, tl.trans(start), DOT, PRECISION)
    if HAS_D:
        y += tl.load(D_ptr + head).to(COMPUTE) * x
    if HAS_Z:
        z = _load_rows(z_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
        y = y * z * tl.sigmoid(z)
    _store_rows(y_ptr, y, batch, t, mask_t, L, H, head, p, p < P, P)


@triton.jit
def _as_dot_reads(v, ROUND_TF32: tl.constexpr, DOT: tl.constexpr):
    """v as ``tl.dot`` reads it, in v's dtype: cast to and back from 16-bit DOT, or rounded to nearest at tf32
    (10 mantissa bits) when the dots read 32-bit operands as tf32, else v. The dot then takes it exactly, so that
    an elementwise product with the same rounded v matches the dot's."""
    if DOT.primitive_bitwidth == 16:
        return v.to(DOT).to(v.dtype)
    if ROUND_TF32:
        return ((v.to(tl.int32, bitcast=True) + 0x1000) & -0x2000).to(tl.float32, bitcast=True)
    return v


@triton.jit
def _gated_grad(dy_ptr, z_ptr, batch, t, mask_t, L, H, head, p, P, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr):
    """(dy, z, g = dy * silu(z)) as (T, BLOCK_P) tiles; z and g are dy's when there is no gate."""
    dy = _load_rows(dy_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
    if HAS_Z:
        z = _load_rows(z_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
        return dy, z, dy * z * tl.sigmoid(z)
    return dy, dy, dy


@triton.jit
def _channel_block(block, x_ptr, starts_ptr, end_grads_ptr, dy_ptr, z_ptr, batch, chunk, t, mask_t, L, H, head, n,
                   n_chunks, P, N, BLOCK_P: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr):
    """The gradient kernel's inputs for channels ``block * BLOCK_P + [0, BLOCK_P)``: p (BLOCK_P,), x, dy, z, g
    (T, BLOCK_P) each (:func:`_gated_grad`), and the chunk's start state and end-state gradient (BLOCK_P, BLOCK_N)."""
    p = block * BLOCK_P + tl.arange(0, BLOCK_P)
    x = _load_rows(x_ptr, batch, t, mask_t, L, H, head, p, p < P, P, COMPUTE)
    offsets, mask = _state_offsets(batch, chunk, head, n_chunks, H, p, n, P, N)
    start = tl.load(starts_ptr + offsets, mask=mask, other=0).to(COMPUTE)
    end_grad = tl.load(end_grads_ptr + offsets, mask=mask, other=0).to(COMPUTE)
    dy, z, g = _gated_grad(dy_ptr, z_ptr, batch, t, mask_t, L, H, head, p, P, HAS_Z, COMPUTE)
    return p, x, start, end_grad, dy, z, g


@triton.jit
def _chunk_state_grad_kernel(dy_ptr, z_ptr, C_ptr, log_decay_ptr, out_ptr, L, H, G, P, N, n_chunks,
                             T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_Z: tl.constexpr,
                             COMPUTE: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr):
    chunk, batch, head, group, t, mask_t = _chunk_coords(L, H, G, T)
    p, n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    _, _, g = _gated_grad(dy_ptr, z_ptr, batch, t, mask_t, L, H, head, p, P, HAS_Z, COMPUTE)
    a = tl.load(log_decay_ptr + (batch * H + head) * n_chunks * T + t)
    C = _load_rows(C_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    offsets, mask = _state_offsets(batch, chunk, head, n_chunks, H, p, n, P, N)
    tl.store(out_ptr + offsets, _dot(tl.trans(g * tl.exp(a)[:, None]), C, DOT, PRECISION), mask=mask)


@triton.jit
def _head_decays(dt_ptr, log_decay_ptr, batch, head, t, mask_t, L, H, n_chunks, T: tl.constexpr,
                 COMPUTE: tl.constexpr):
    """One head's dt and log decays a over the chunk (T,), a_T, the causal decay (T, T) and e^{a_T - a} (T,)."""
    dt = tl.load(dt_ptr + (batch * L + t) * H + head, mask=mask_t, other=0).to(COMPUTE)
    a = tl.load(log_decay_ptr + (batch * H + head) * n_chunks * T + t)
    a_end = tl.sum(tl.where(tl.arange(0, T) == T - 1, a, 0), axis=0)
    return dt, a, a_end, _causal_decay(a, T), tl.exp(a_end - a)


@triton.jit
def _add_head_bc_terms(weighted, dB, dC, dt, a, decay, to_end, x_ptr, starts_ptr, end_grads_ptr, dy_ptr, z_ptr,
                       batch, chunk, t, mask_t, L, H, head, n, n_chunks, P, N, T: tl.constexpr,
                       BLOCK_P: tl.constexpr, P_BLOCKS: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr,
                       DOT: tl.constexpr, NARROW_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """One head's share of the chunk's dB, dC. With intra_ij = decay_ij dt_j (g_i . x_j) (T, T):
    dC = intra B + e^{a} g start and dB = intra^T C + (dt e^{a_T - a}) x end_grad. The heads of a group share B and
    C, so only intra is added to ``weighted`` (T, T) here, and the state terms to dB, dC (T, BLOCK_N); the caller
    multiplies the sum of the heads' intra by B and C once."""
    gx = tl.zeros([T, T], COMPUTE)                     # g x^T
    for block in tl.range(0, P_BLOCKS):  # a loop, not unrolled: see the dx loop of _chunk_grad_kernel
        _, x, start, end_grad, _, _, g = _channel_block(block, x_ptr, starts_ptr, end_grads_ptr, dy_ptr, z_ptr, batch,
                                                        chunk, t, mask_t, L, H, head, n, n_chunks, P, N, BLOCK_P,
                                                        HAS_Z, COMPUTE)
        gx += _dot(g, tl.trans(x), DOT, PRECISION)
        dC += _dot(tl.exp(a)[:, None] * g, start, NARROW_DOT, PRECISION)
        dB += _dot((dt * to_end)[:, None] * x, end_grad, NARROW_DOT, PRECISION)
    return weighted + decay * dt[None, :] * gx, dB, dC


@triton.jit
def _store_bc(weighted, dB, dC, B, C, dB_ptr, dC_ptr, batch, t, mask_t, L, width, index, n, N,
              NARROW_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """dB, dC with the heads' summed intra-chunk terms (see ``_add_head_bc_terms``), as rows [batch, t, index, :] of
    (B, L, width, N) tensors."""
    _store_rows(dB_ptr, dB + _dot(tl.trans(weighted), C, NARROW_DOT, PRECISION), batch, t, mask_t, L, width, index, n,
                n < N, N)
    _store_rows(dC_ptr, dC + _dot(weighted, B, NARROW_DOT, PRECISION), batch, t, mask_t, L, width, index, n, n < N, N)


@triton.jit
def _chunk_grad_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, starts_ptr, end_grads_ptr, log_decay_ptr,
                       dy_ptr, dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, dD_ptr, dA_ptr, L, H, G, P, N, n_chunks,
                       T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr,
                       HAS_Z: tl.constexpr, COMPUTE: tl.constexpr, DOT: tl.constexpr, NARROW_DOT: tl.constexpr,
                       PRECISION: tl.constexpr, ROUND_TF32: tl.constexpr, WITH_BC: tl.constexpr,
                       P_BLOCKS: tl.constexpr):
    """dx, dz, ddt and the dD, dA partials of one head's chunk; WITH_BC also its per-head dB, dC (one launch for
    all, else ``_chunk_grad_bc_kernel`` after it, which halves the live tiles of a program). The P channels are
    taken BLOCK_P at a time (P_BLOCKS steps), so that the (T, BLOCK_P) tiles stay small; the (T, T) tiles are made
    once."""
    chunk, batch, head, group, t, mask_t = _chunk_coords(L, H, G, T)
    n = tl.arange(0, BLOCK_N)
    steps = tl.arange(0, T)
    dt, a, a_end, decay, to_end = _head_decays(dt_ptr, log_decay_ptr, batch, head, t, mask_t, L, H, n_chunks, T,
                                               COMPUTE)
    B = _load_rows(B_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    C = _load_rows(C_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)

    # The intra-chunk terms as products with (T, P) results, so that few (T, T) tiles are live at once:
    # with W = C B^T ∘ decay and x' = dt ∘ x, the output is W x', dx gets dt ∘ (W^T g), and the sums over
    # i or j of intra = W ∘ (g x'^T) that the decay gradient needs are Σ_p g ∘ (W x') and Σ_p x' ∘ (W^T g).
    # The decay gradient takes their difference, which cancels to a small rest; tf32 products cut their
    # operands' mantissas, so with the elementwise g and x' the two sums were of differently rounded intra and
    # the rest was mostly rounding (issue #16). So W, x' and g are rounded once (to tf32, or to the 16-bit
    # input dtype the dots then read), and both sums use those.
    A = tl.load(A_ptr + head).to(COMPUTE)
    skip = tl.load(D_ptr + head).to(COMPUTE) if HAS_D else 0.0
    W = _as_dot_reads(_dot(C, tl.trans(B), DOT, PRECISION) * decay, ROUND_TF32, DOT)
    da = tl.zeros([T], COMPUTE)                    # Σ_p g ∘ (y before D and the gate), per step
    intra_per_dt = tl.zeros([T], COMPUTE)          # Σ_i intra_ij / dt_j
    intra_cols = tl.zeros([T], COMPUTE)            # Σ_i intra_ij
    into_state = tl.zeros([T], COMPUTE)            # Σ_p x ∘ (B end_grad^T), then ∘ e^{a_T - a}
    end_dot = tl.zeros([], COMPUTE)                # Σ end_grad ∘ start
    skip_grad = tl.zeros([], COMPUTE)
    # A loop, not tl.static_range: triton 3.6's unrolled copies of the loop body raced on the H200 (16-bit
    # products at N >= 64: gradients wrong and different from run to run, or an illegal address); the loop is
    # also faster from 8k tokens on (6-7% slower at 4 x 2k; bench/RESULTS.md, issue #16)
    for block in tl.range(0, P_BLOCKS):
        p, x, start, end_grad, dy, z, g = _channel_block(block, x_ptr, starts_ptr, end_grads_ptr, dy_ptr, z_ptr,
                                                         batch, chunk, t, mask_t, L, H, head, n, n_chunks, P, N,
                                                         BLOCK_P, HAS_Z, COMPUTE)
        # each (T, BLOCK_P) product is reduced as soon as it is made, so that few of them are live at once
        x_dt = _as_dot_reads(dt[:, None] * x, ROUND_TF32, DOT)
        g_read = _as_dot_reads(g, ROUND_TF32, DOT)
        Wx = _dot(W, x_dt, DOT, PRECISION)
        from_start = tl.exp(a)[:, None] * _dot(C, tl.trans(start), DOT, PRECISION)
        if HAS_Z:
            sig = tl.sigmoid(z)
            y = Wx + from_start + skip * x
            _store_rows(dz_ptr, dy * y * sig * (1 + z * (1 - sig)), batch, t, mask_t, L, H, head, p, p < P, P)
        da += tl.sum(g_read * Wx + g * from_start, axis=1)
        Wg = _dot(tl.trans(W), g_read, DOT, PRECISION)
        intra_per_dt += tl.sum(x * Wg, axis=1)
        intra_cols += tl.sum(x_dt * Wg, axis=1)
        B_end_grad = _dot(B, tl.trans(end_grad), DOT, PRECISION)
        into_state += tl.sum(x * B_end_grad, axis=1)
        dx = dt[:, None] * Wg + (dt * to_end)[:, None] * B_end_grad + skip * g
        _store_rows(dx_ptr, dx, batch, t, mask_t, L, H, head, p, p < P, P)
        end_dot += tl.sum(end_grad * start)
        skip_grad += tl.sum(tl.sum(x * g, axis=1), axis=0)

    # gradient of the log decays a_i, then through a = cumsum(dt * A) by a reverse cumsum
    into_state = to_end * into_state                                        # d loss / d (dt_j) via the end state
    da -= intra_cols + dt * into_state
    da += tl.where(steps == T - 1, tl.sum(dt * into_state, axis=0) + tl.exp(a_end) * end_dot, 0)
    suffix = tl.sum(da, axis=0) - tl.cumsum(da, axis=0) + da
    ddt = intra_per_dt + into_state + A * suffix
    tl.store(ddt_ptr + (batch * L + t) * H + head, ddt, mask=mask_t)
    partial = (batch * n_chunks + chunk) * H + head
    tl.store(dA_ptr + partial, tl.sum(dt * suffix, axis=0))
    if HAS_D:
        tl.store(dD_ptr + partial, skip_grad)

    if WITH_BC:
        weighted, dB, dC = _add_head_bc_terms(
            tl.zeros([T, T], COMPUTE), tl.zeros([T, BLOCK_N], COMPUTE), tl.zeros([T, BLOCK_N], COMPUTE), dt, a,
            decay, to_end, x_ptr, starts_ptr, end_grads_ptr, dy_ptr, z_ptr, batch, chunk, t, mask_t, L, H, head, n,
            n_chunks, P, N, T, BLOCK_P, P_BLOCKS, HAS_Z, COMPUTE, DOT, NARROW_DOT, PRECISION)
        _store_bc(weighted, dB, dC, B, C, dB_ptr, dC_ptr, batch, t, mask_t, L, H, head, n, N, NARROW_DOT, PRECISION)


@triton.jit
def _chunk_grad_bc_kernel(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, starts_ptr, end_grads_ptr, log_decay_ptr, dy_ptr,
                          dB_ptr, dC_ptr, L, H, G, P, N, n_chunks, T: tl.constexpr, BLOCK_P: tl.constexpr,
                          BLOCK_N: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr, DOT: tl.constexpr,
                          NARROW_DOT: tl.constexpr, PRECISION: tl.constexpr, P_BLOCKS: tl.constexpr,
                          HEADS: tl.constexpr):
    """dB, dC of one chunk summed over HEADS heads of one group (program (chunk, (batch, group, split))), as rows
    of (B, L, G * splits, N) tensors: the B, C products of the intra-chunk terms and the stores are made once for
    those heads, not once per head."""
    chunk, batch, group, slot, slots, head, last, t, mask_t = _heads_coords(L, H, G, T, HEADS)
    n = tl.arange(0, BLOCK_N)
    weighted = tl.zeros([T, T], COMPUTE)
    dB = tl.zeros([T, BLOCK_N], COMPUTE)
    dC = tl.zeros([T, BLOCK_N], COMPUTE)
    while head < last:  # not range(): see _pass_states_kernel
        dt, a, _, decay, to_end = _head_decays(dt_ptr, log_decay_ptr, batch, head, t, mask_t, L, H, n_chunks, T,
                                               COMPUTE)
        weighted, dB, dC = _add_head_bc_terms(weighted, dB, dC, dt, a, decay, to_end, x_ptr, starts_ptr,
                                              end_grads_ptr, dy_ptr, z_ptr, batch, chunk, t, mask_t, L, H, head, n,
                                              n_chunks, P, N, T, BLOCK_P, P_BLOCKS, HAS_Z, COMPUTE, DOT,
                                              NARROW_DOT, PRECISION)
        head += 1
    B = _load_rows(B_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    C = _load_rows(C_ptr, batch, t, mask_t, L, G, group, n, n < N, N, COMPUTE)
    _store_bc(weighted, dB, dC, B, C, dB_ptr, dC_ptr, batch, t, mask_t, L, slots, slot, n, N, NARROW_DOT, PRECISION)


def _meta(x: torch.Tensor, P: int, N: int, chunk_size: int) -> dict:
    compute = compute_dtype(x.dtype)
    accumulate = tl.float64 if compute == torch.float64 else tl.float32
    block_n = max(16, triton.next_power_of_2(N))
    dots_16bit = (x.is_cuda if DOTS_16BIT is None else DOTS_16BIT) and x.dtype in _DOT_16BIT
    return dict(
        T=chunk_size, BLOCK_P=max(16, triton.next_power_of_2(P)), BLOCK_N=block_n,
        COMPUTE=accumulate, DOT=_DOT_16BIT[x.dtype] if dots_16bit else accumulate,
        # tf32 tensor-core products for 32-bit operands (Triton's default); exact for float64
        PRECISION="ieee" if compute == torch.float64 else "tf32",
        num_warps=NUM_WARPS,
    )


def _narrow_dot(meta: dict) -> tl.dtype:
    """The operand dtype of the products whose right operand is N (states) wide: the dB, dC products of the gradient
    kernels (their state terms, and the intra-chunk terms times B, C) and the (T, N) right operands of the
    chunk-state and state-gradient kernels. 16-bit only up to 4 warps: at 8, Triton 3.6 gives such an operand (N
    contiguous, 32 bytes a row) to m64n8 wgmmas, the second warpgroup's starting 16 bytes into each row, and the
    tensor cores read the whole row, past the tile (in the gradient kernel past the program's shared memory: the
    illegal address of issue #16, bench/RESULTS.md). As fp32 operands read as tf32 (laid out K contiguous) they
    stay within their tiles."""
    return meta["DOT"] if meta["num_warps"] <= 4 else meta["COMPUTE"]


def _passed_dtype(x: torch.Tensor, N: int) -> torch.dtype:
    """The dtype of the passed states (each chunk's start state and end-state gradient, which the products read):
    16-bit inputs' own with PASSED_STATES_16BIT from N = SPLIT_GRAD_FROM_N on (as mamba_ssm keeps them; half the
    bytes of the largest tensors at wide N), else the compute dtype. Below it the gradients run as one launch, which
    with 16-bit states made an illegal address on the H200 (N 64, channel blocks of 32; bench/RESULTS.md, session
    23). The pass itself and each chunk's own state stay in the compute dtype."""
    wide = N >= SPLIT_GRAD_FROM_N
    return x.dtype if PASSED_STATES_16BIT and wide and x.dtype in _DOT_16BIT else compute_dtype(x.dtype)


def _first_that_fits(launches: list[Callable[[], _Result]], x: torch.Tensor, N: int, meta: dict) -> _Result:
    """The result of the first of ``launches`` (in order of preference) whose kernels fit in the GPU's shared
    memory; when none does, one error naming the sizes to change. A launch that gives way may have run some of
    its kernels: every launch must overwrite all of its outputs (no accumulation into them, no atomics)."""
    for launch in launches:
        try:
            return launch()
        except OutOfResources as error:
            if "shared memory" not in str(error):
                raise
            too_large = error
    raise ValueError(f"the Triton SSD scan needs more shared memory than this GPU has at N {N}, head_dim "
                     f"{x.shape[-1]}, chunk {meta['T']} with {x.dtype} inputs ({too_large}); use a smaller "
                     f"chunk_size, d_state or head_dim") from too_large


def _pass_states(states, log_decay, init, reverse: bool, meta: dict,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequential pass over chunks of ``states`` (B, n_chunks, H, P, N): (the passed states in ``dtype``, in
    place when that is ``states``' own; the carry out, in ``states``' dtype)."""
    batch, n_chunks, heads, P, N = states.shape
    final = states.new_empty(batch, heads, P, N)
    passed = states if dtype == states.dtype else torch.empty_like(states, dtype=dtype)
    grid = (batch * heads, triton.cdiv(P * N, PASS_BLOCK))
    _pass_states_kernel[grid](
        states, passed, log_decay, init if init is not None else final, final, heads, P * N, n_chunks, T=meta["T"],
        BLOCK=PASS_BLOCK, CHUNKS=PASS_CHUNKS, HAS_INIT=init is not None, REVERSE=reverse, COMPUTE=meta["COMPUTE"],
        num_warps=PASS_WARPS,
    )
    return passed, final


class _TritonSSD(torch.autograd.Function):
    """x, z (B, L, H, P), dt (B, L, H) discretised, A, D (H,), B, C (B, L, G, N), initial_state (B, H, P, N)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, initial_state, chunk_size):
        batch, length, heads, P = x.shape
        groups, N = B.shape[2:]
        compute = compute_dtype(x.dtype)
        x, dt, B, C = x.contiguous(), dt.to(compute).contiguous(), B.contiguous(), C.contiguous()
        z = None if z is None else z.contiguous()
        A, D = A.to(compute).contiguous(), None if D is None else D.to(compute).contiguous()
        n_chunks = triton.cdiv(length, chunk_size)
        largest = max(x.numel(), B.numel(), batch * n_chunks * heads * P * N)
        if largest >= 2**31:
            raise ValueError(f"the Triton SSD scan indexes its tensors with 32 bits, and one of them would hold "
                             f"{largest:,} elements (batch {batch}, length {length}, {heads} heads of {P}, N {N}); "
                             f"scan the sequence in pieces, passing the final state on as initial_state "
                             f"(seqpipe.chunked.chunked_forward does this for a model)")
        meta = _meta(x, P, N, chunk_size)
        states = torch.empty(batch, n_chunks, heads, P, N, device=x.device, dtype=compute)
        log_decay = torch.empty(batch, heads, n_chunks * chunk_size, device=x.device, dtype=compute)
        grid = (n_chunks, batch * heads)
        shape = (length, heads, groups, P, N, n_chunks)
        init = None if initial_state is None else initial_state.to(compute).contiguous()
        y = torch.empty_like(x)

        def launch():
            # the chunk-state and state-gradient kernels' one product each has an N-wide right operand
            _chunk_state_kernel[grid](x, dt, A, B, states, log_decay, *shape, **dict(meta, DOT=_narrow_dot(meta)))
            starts, final = _pass_states(states, log_decay, init, False, meta, _passed_dtype(x, N))
            _chunk_output_kernel[grid](x, dt, B, C, D if D is not None else A, z if z is not None else x, starts,
                                       log_decay, y, *shape, HAS_D=D is not None, HAS_Z=z is not None, **meta)
            return starts, final

        starts, final = _first_that_fits([launch], x, N, meta)
        ctx.save_for_backward(x, dt, A, B, C, D, z, starts, log_decay)
        ctx.meta, ctx.shape, ctx.initial_dtype = meta, shape, None if initial_state is None else initial_state.dtype
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, z, starts, log_decay = ctx.saved_tensors
        meta, shape = ctx.meta, ctx.shape
        batch, length, heads, P = x.shape
        groups, N = B.shape[2:]
        compute = dt.dtype
        grad_y = grad_y.contiguous()
        grid = (shape[-1], batch * heads)
        z_or_x = z if z is not None else x
        end_grads = torch.empty_like(starts, dtype=compute)
        _first_that_fits([lambda: _chunk_state_grad_kernel[grid](
            grad_y, z_or_x, C, log_decay, end_grads, *shape, HAS_Z=z is not None, **dict(meta, DOT=_narrow_dot(meta)))],
            x, N, meta)
        grad_final = None if grad_final is None else grad_final.to(compute).contiguous()
        end_grads, grad_initial = _pass_states(end_grads, log_decay, grad_final, True, meta, _passed_dtype(x, N))
        # stored in the inputs' dtype by the kernel (one rounding, as .to() after an fp32 store; half the bytes)
        dx = torch.empty_like(x)
        dz = torch.empty_like(z) if z is not None else dx  # dz_ptr is not written without z
        ddt = torch.empty_like(dt)
        dA_partial = x.new_empty(batch, shape[-1], heads, dtype=compute)
        dD_partial = torch.empty_like(dA_partial)
        grad_block_p = min(meta["BLOCK_P"], GRAD_BLOCK_P)
        tf32_dots = x.is_cuda if TF32_DOTS is None else TF32_DOTS

        def gradients(split: bool, block_p: int):
            stages = SPLIT_GRAD_STAGES_32BIT if split and x.element_size() >= 4 else None
            common = dict(meta, BLOCK_P=block_p, P_BLOCKS=triton.cdiv(P, block_p), HAS_Z=z is not None,
                          NARROW_DOT=_narrow_dot(meta), **({} if stages is None else {"num_stages": stages}))
            # dB, dC summed over each BC_HEADS heads of a group (two launches) or per head (one), summed on here
            splits = triton.cdiv(heads // groups, BC_HEADS) if split else heads // groups

            def launch():
                dB, dC = partial = x.new_empty(2, batch, length, groups * splits, N, dtype=compute)
                _chunk_grad_kernel[grid](
                    x, dt, A, B, C, D if D is not None else A, z_or_x, starts, end_grads, log_decay, grad_y, dx, ddt,
                    dB, dC, dz, dD_partial, dA_partial, *shape, HAS_D=D is not None, WITH_BC=not split,
                    ROUND_TF32=tf32_dots and meta["PRECISION"] == "tf32", **common)
                if split:
                    bc_meta = dict(common, num_warps=BC_WARPS)
                    _chunk_grad_bc_kernel[(shape[-1], batch * groups * splits)](
                        x, dt, B, C, z_or_x, starts, end_grads, log_decay, grad_y, dB, dC, *shape, HEADS=BC_HEADS,
                        **dict(bc_meta, NARROW_DOT=_narrow_dot(bc_meta)))
                return partial.view(2, batch, length, groups, splits, N).sum(4)
            return launch

        # where one launch does not fit the shared memory (N 128 fp32 with z at chunk 64: 280 KiB fused), the two
        # do (half the tiles), or then channel blocks of 16; the gradients differ only in the order of their sums
        options = dict.fromkeys([(N >= SPLIT_GRAD_FROM_N, grad_block_p), (True, grad_block_p), (True, 16)])
        dB, dC = _first_that_fits([gradients(split, block_p) for split, block_p in options], x, N, meta)

        return (
            dx, ddt, dA_partial.sum((0, 1)), dB.to(B.dtype), dC.to(C.dtype),
            None if D is None else dD_partial.sum((0, 1)), None if z is None else dz,
            None if ctx.initial_dtype is None else grad_initial.to(ctx.initial_dtype), None,
        )


def ssd_scan_triton(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_state=None,
                    return_final_state=False, chunk_size=64):
    """Triton backend of :func:`seqpipe.kernels.ssd_scan`.

    The kernels' chunk is ``chunk_size`` rounded up to a power of two of at least 16 (the smallest tile of
    ``tl.dot``): the chunk changes rounding only, so a block configured for CPU runs unchanged on a GPU.
    """
    chunk_size = max(16, triton.next_power_of_2(chunk_size))
    compute = compute_dtype(x.dtype)
    dt = discretize_heads(dt.to(compute), None if dt_bias is None else dt_bias.to(compute), dt_softplus)
    y, final = _TritonSSD.apply(x, dt, A, B, C, D, z, initial_state, chunk_size)
    return (y, final) if return_final_state else y
