"""Fused Triton selective scan (forward and backward) and the one-token state update.

Imported only when the "triton" backend is asked for: ``import seqpipe.kernels`` works without triton.

Each program owns a block of channels of one batch row (inside one B/C group), all N states and one segment of the
sequence, which it walks in chunks of ``CHUNK`` steps: it loads u, delta, B, C (and z) for the chunk, discretises,
scans the (CHUNK, N_REG, BLOCK_D, N_LANES) tile along time with ``tl.associative_scan``, contracts with C over
the states, adds D * u, gates and stores y. The N states are split as N = N_REG x N_LANES (see ``Tile``): N_LANES
of them on lanes, and N_REG in each thread's registers, beside the chunk's steps. Only y and the last state reach
HBM, and, when gradients are wanted, the state at each chunk start (1/CHUNK of a (B, L, D, N) tensor) and, when z
gates y, y before the gate (the backward reads it for dz instead of recomputing sum_n C x, as mamba_ssm's CUDA scan
does). The backward walks a segment's chunks in reverse: it recomputes the chunk's states from its saved start,
runs the adjoint recurrence ``lam_t = a_{t+1} lam_{t+1} + C_t dy_t`` as a reverse scan of the tile, and
accumulates every gradient. Per-time gradients of B and C are summed over channel blocks, and per-channel ones (A,
D, delta_bias) over batch rows and segments, by PyTorch afterwards: deterministic, no atomics.

Segments split L across programs when batch x channel blocks alone would leave the GPU idle (a batch of one
long sequence). The state entering each segment comes from a summary pass: every segment scans from a
zero state to get its end state H_s and its total decay P_s = exp(A * sum(dt)); a short sequential pass then
composes ``start_{s+1} = P_s * start_s + H_s`` over the segments. The backward does the same for the
adjoint in reverse; its summary needs no scan, the adjoint unrolled being a sum of decayed inputs. The summaries
read the inputs once more, the price of the parallelism; the segment the composition does not need (the last one
forward, the first one backward) is not summarised, and the others are summarised in parts when that takes more
programs to fill the GPU (their registers allow four times the scan's warps an SM).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from seqpipe.kernels.scan_common import compute_dtype, scan_groups


class Tile(NamedTuple):
    """A program's share of a kernel's work: ``block_d`` channels, ``warps`` warps, and the N states as
    ``state_lanes`` (a power of two) on lanes times N / state_lanes in each thread's registers. Triton lays the
    (CHUNK, N_REG, BLOCK_D, N_LANES) tile with the states on lanes first and the channels on the remaining lanes and
    the warps: ``block_d * state_lanes == 32 * warps`` gives each thread one channel, a multiple of it several."""
    block_d: int
    warps: int
    state_lanes: int


# Tiles from the H200 sweeps of bench/gpu_peers.py (bench/RESULTS.md, issue #16), chunks of 16 steps. The forward
# scan keeps 4 states on lanes, 4 in registers: its sum over the states for y is 3 additions in a thread and 2
# shuffle levels where 16 state lanes took 4 levels (the forward's largest cost after the exps). The backward scan
# takes 4 channels in one warp, 8 states on lanes and 2 in registers (its sums over channels stay inside the warp, no
# shared memory and barriers; 255 registers a thread allow 2 warps a scheduler either way; with its loads a chunk
# ahead, 8 state lanes beat 16 by 2-6%).
# The segment summaries have no sums over channels or states and keep 16 state lanes (at 4 they lost 0.6 ms at
# B1 L64k: a quarter of the threads, in one-warp programs). The forward saves the state at every chunk start for the
# backward, (B, L / CHUNK, D, N) in float32 (the size of a float32 u when N is 16), so both passes share CHUNK.
CHUNK = 16
FORWARD_TILE = Tile(block_d=8, warps=1, state_lanes=4)
SUMMARY_TILE = Tile(block_d=8, warps=4, state_lanes=16)
BACKWARD_TILE = Tile(block_d=4, warps=1, state_lanes=8)
# Segments are added until batch x channel blocks x segments reaches this many programs.
SEGMENT_PROGRAMS = 1024
SUMMARY_PROGRAMS = 4096  # programs of the segment summaries (of 4 warps at 64 registers: about four waves)
MAX_PARTS = 64  # parts a segment at most: the composition scans a segment's parts in registers
STATE_UPDATE_BLOCK_D = 32  # channels a program of the one-token state update
# Inline PTX (16-bit upcasts, the decays' exp) on NVIDIA GPUs; Triton's interpreter (TRITON_INTERPRET=1) and ROCm
# upcast with .to() and take tl.exp
PTX = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1" and torch.version.hip is None)


@triton.jit
def linear_combine(a_first, b_first, a_second, b_second):
    """Two affine steps ``x -> a x + b``, first then second, as one: the combine of ``tl.associative_scan`` for
    linear recurrences (this scan and SSD's state pass)."""
    return a_first * a_second, b_first * a_second + b_second


@triton.jit
def _softplus(x):
    # log1p(e) = log(w) * e / (w - 1) with w = 1 + e keeps full precision for tiny e (Kahan's trick).
    e = tl.exp(-tl.abs(x))
    w = 1 + e
    return tl.maximum(x, 0) + tl.where(w == 1, e, tl.log(w) * e / tl.where(w == 1, 1, w - 1))


@triton.jit
def _upcast(x, COMPUTE: tl.constexpr):
    """``x`` in COMPUTE. On the GPU a 16-bit ``x`` is widened by the PTX ``cvt`` that Triton itself would emit, but
    inline: Triton's layout pass moves a layout conversion in front of an ``arith.extf`` (fewer bytes to move)
    and recomputes every op after it in the new layout, which put the softplus of delta in the layout
    replicated over the 16 state lanes (66 against 36 exps a thread, 2.5x the SASS of the float32 kernel)."""
    if PTX and (x.dtype.is_bf16() or x.dtype.is_fp16()):
        cvt: tl.constexpr = "cvt.f32.bf16 $0, $1;" if x.dtype.is_bf16() else "cvt.f32.f16 $0, $1;"
        return tl.inline_asm_elementwise(cvt, "=r,h", [x], dtype=tl.float32, is_pure=True, pack=1).to(COMPUTE)
    return x.to(COMPUTE)


@triton.jit
def _load(pointers, mask, COMPUTE: tl.constexpr):
    """The values at ``pointers`` in COMPUTE, 0 where masked."""
    return _upcast(tl.load(pointers, mask=mask, other=0), COMPUTE)


@triton.jit
def _decay(dt, A):
    """exp(dt * A) for a tile. In float32 on the GPU one ``ex2.approx.ftz`` of dt * A * log2(e): ``tl.exp``
    compiles to the same MUFU exp plus a range check and two predicated multiplications for results below 2^-126
    (five instructions against two), which a decay factor has no use for (flushed to 0)."""
    if PTX and dt.dtype.is_fp32():
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [dt * (A * 1.4426950408889634)],
                                         dtype=tl.float32, is_pure=True, pack=1)
    return tl.exp(dt * A)


@triton.jit
def _dt(delta_ptr, offsets, mask, bias, SOFTPLUS: tl.constexpr, COMPUTE: tl.constexpr):
    """(pre-activation, dt) for the positions at ``offsets``; dt is 0 where masked, so a = 1 and b = 0."""
    return _activate(_load(delta_ptr + offsets, mask, COMPUTE) + bias, mask, SOFTPLUS)


@triton.jit
def _activate(pre, mask, SOFTPLUS: tl.constexpr):
    """(pre-activation, dt) from delta + delta_bias; dt is 0 where masked."""
    dt = _softplus(pre) if SOFTPLUS else pre
    return pre, tl.where(mask, dt, 0)


@triton.jit
def _per_state(x):
    """A (CHUNK, BLOCK_D) tile broadcast over the states: (CHUNK, 1, BLOCK_D, 1)."""
    return x[:, None, :, None]


@triton.jit
def _sum_states(x):
    """(CHUNK, BLOCK_D) sums over the states of a (CHUNK, N_REG, BLOCK_D, N_LANES) tile: in registers, then over
    lanes."""
    return tl.sum(tl.sum(x, axis=1), axis=2)


@triton.jit
def _rows(ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, s_b, s_g, s_n, s_l,
          VARYING: tl.constexpr, COMPUTE: tl.constexpr):
    """B or C for a chunk as a tile: (CHUNK, N_REG, 1, N_LANES) when time-varying, (1, N_REG, BLOCK_D, N_LANES) if
    not. (The time-varying rows are loaded as (CHUNK, N_REG, N_LANES): a 4-D load would be laid out for its own
    coalescing, time on lanes, and the scan would follow it.)"""
    if VARYING:
        offsets = batch * s_b + group * s_g + n[None, :, :] * s_n + t[:, None, None] * s_l
        tile = _load(ptr + offsets, mask_t[:, None, None] & mask_n[None, :, :], COMPUTE)[:, :, None, :]
    else:
        tile = _load(ptr + state_offsets, mask_dn, COMPUTE)[None, :, :, :]
    return tile


@triton.jit
def _program_coords(L, D, Dg, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr):
    """This program's batch row, group, channels d (BLOCK_D,), states n (N_REG, N_LANES), the offsets and mask of
    its (N_REG, BLOCK_D, N_LANES) state tile in a (..., D, N) tensor, and its channels' row offsets in (B, D, L)."""
    batch = tl.program_id(0)
    blocks_per_group = tl.cdiv(Dg, BLOCK_D)
    group = tl.program_id(1) // blocks_per_group
    block = tl.program_id(1) % blocks_per_group
    local = block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = local < Dg
    d = group * Dg + local
    n = tl.arange(0, BLOCK_N // N_LANES)[:, None] * N_LANES + tl.arange(0, N_LANES)[None, :]
    mask_n = n < N
    state_offsets = d[None, :, None] * N + n[:, None, :]
    mask_dn = mask_d[None, :, None] & mask_n[:, None, :]
    # in int64: B x D x L reaches 2**31 at a million steps of 2048 channels
    return batch, group, d, mask_d, n, mask_n, state_offsets, mask_dn, (batch.to(tl.int64) * D + d) * L


@triton.jit
def _segment(n_chunks, segment_chunks):
    """This program's segment (program axis 2): (index, first chunk, end chunk exclusive, (batch, segment) row)."""
    segment = tl.program_id(2)
    first = segment * segment_chunks
    return segment, first, tl.minimum(first + segment_chunks, n_chunks), tl.program_id(0) * tl.num_programs(2) + segment


@triton.jit
def _summary_part(n_chunks, segment_chunks, part_chunks, parts, FIRST_SEGMENT: tl.constexpr):
    """This summary program's part of a segment (program axis 2 runs over the parts of segments FIRST_SEGMENT,
    FIRST_SEGMENT + 1, ...): (first chunk, end chunk exclusive, (batch, part) row); a part past its segment's end is
    empty."""
    part = tl.program_id(2)
    segment = part // parts + FIRST_SEGMENT
    first = segment * segment_chunks + part % parts * part_chunks
    end = tl.minimum(tl.minimum(first + part_chunks, (segment + 1) * segment_chunks), n_chunks)
    return first, end, tl.program_id(0) * tl.num_programs(2) + part


@triton.jit
def _channel_params(A_ptr, bias_ptr, D_ptr, d, mask_d, state_offsets, mask_dn, HAS_BIAS: tl.constexpr,
                    HAS_D: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_D: tl.constexpr):
    """A (N_REG, BLOCK_D, N_LANES), delta_bias and D (BLOCK_D,) of this program's channels (zeros when absent)."""
    A = _load(A_ptr + state_offsets, mask_dn, COMPUTE)
    bias = _load(bias_ptr + d, mask_d, COMPUTE) if HAS_BIAS else tl.zeros([BLOCK_D], COMPUTE)
    skip = _load(D_ptr + d, mask_d, COMPUTE) if HAS_D else tl.zeros([BLOCK_D], COMPUTE)
    return A, bias, skip


@triton.jit
def _chunk_start(starts_ptr, batch, n_chunks, chunk, D, N, state_offsets):
    """Pointers to the state entering ``chunk`` of this program's batch row in the (B, n_chunks, D, N) chunk starts,
    which the forward stores and the backward reloads (int64: as large as u when N is CHUNK)."""
    return starts_ptr + (batch * n_chunks + chunk).to(tl.int64) * D * N + state_offsets


@triton.jit
def _row_at(x, steps, step):
    """Row ``step`` of a (CHUNK, N_REG, BLOCK_D, N_LANES) tile: a state tile (N_REG, BLOCK_D, N_LANES)."""
    return tl.sum(tl.where((steps == step)[:, None, None, None], x, 0), axis=0)


@triton.jit
def _scan_chunk(u, dt, B, A, state0, CHUNK: tl.constexpr):
    """B u dt and the states x (CHUNK, N_REG, BLOCK_D, N_LANES) of one chunk from state0."""
    a = _decay(_per_state(dt), A[None, :, :, :])
    bu = _per_state(dt * u) * B
    # state0 enters through the first step's input, so the scan's running decay products are never used
    first = (tl.arange(0, CHUNK) == 0)[:, None, None, None]
    _, x = tl.associative_scan((a, tl.where(first, a * state0[None, :, :, :] + bu, bu)), axis=0,
                               combine_fn=linear_combine)
    return bu, x


@triton.jit
def _reverse_scan(a, b):
    """h_t = a_t h_{t+1} + b_t along axis 0 (the second output of ``tl.associative_scan((a, b), axis=0,
    combine_fn=linear_combine, reverse=True)``) as flip, scan, flip.

    The scan kernels' tiles keep the time axis in each thread's registers, where a flip is a renaming of
    registers; triton 3.6 lowers ``reverse=True`` with lane reversals instead (640 more warp shuffles per
    chunk of the backward kernel on sm_90, against its 520 others).
    """
    _, h = tl.associative_scan((tl.flip(a, 0), tl.flip(b, 0)), axis=0, combine_fn=linear_combine)
    return tl.flip(h, 0)


@triton.jit
def _chunk_adjoint(delta_ptr, offsets, mask, t, L, steps, bias, A, dt, grad, C, carry, SOFTPLUS: tl.constexpr,
                   COMPUTE: tl.constexpr, CHUNK: tl.constexpr):
    """Reverse scan of ``lam_t = a_{t+1} lam_{t+1} + C_t dy_t`` over one chunk.

    ``carry`` (N_REG, BLOCK_D, N_LANES) is the gradient reaching the chunk's last state from later chunks. Returns
    lam (CHUNK, N_REG, BLOCK_D, N_LANES) and the gradient reaching the state before the chunk, ``a_0 lam_0``.
    """
    # a_{t+1} inside the chunk; 1 on the last row, whose successor's decay is already in carry
    _, dt_next = _dt(delta_ptr, offsets + 1, mask & (steps < CHUNK - 1)[:, None] & (t + 1 < L)[:, None],
                     bias[None, :], SOFTPLUS, COMPUTE)
    lam_in = _per_state(grad) * C
    a_next = _decay(_per_state(dt_next), A[None, :, :, :])
    last = (steps == CHUNK - 1)[:, None, None, None]
    lam = _reverse_scan(a_next, tl.where(last, lam_in + carry[None, :, :, :], lam_in))
    dt_first = tl.sum(tl.where((steps == 0)[:, None], dt, 0), axis=0)
    return lam, _decay(dt_first[None, :, None], A) * _row_at(lam, steps, 0)


@triton.jit
def _segment_summary_fwd_kernel(end_ptr, decay_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, L, D, Dg, N,
                                n_chunks, segment_chunks, part_chunks, parts, sb_b, sb_g, sb_n, sb_l,
                                SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, B_VARYING: tl.constexpr,
                                COMPUTE: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
                                BLOCK_N: tl.constexpr, N_LANES: tl.constexpr):
    """Each part of the segments but the last scanned from a zero state: its end state H and total decay
    exp(A * sum dt), (B, (S - 1) * parts, D, N)."""
    batch, group, d, mask_d, n, mask_n, state_offsets, mask_dn, row = _program_coords(
        L, D, Dg, N, BLOCK_D, BLOCK_N, N_LANES)
    first, end, part_row = _summary_part(n_chunks, segment_chunks, part_chunks, parts, 0)
    A, bias, _skip = _channel_params(A_ptr, bias_ptr, bias_ptr, d, mask_d, state_offsets, mask_dn, HAS_BIAS,
                                     False, COMPUTE, BLOCK_D)
    state = tl.zeros_like(A)
    total_dt = tl.zeros([BLOCK_D], COMPUTE)
    steps = tl.arange(0, CHUNK)
    chunk = first
    while chunk < end:  # not range(): triton 3.6's interpreter fails on a runtime bound with numpy >= 2.4
        t = chunk * CHUNK + steps
        offsets = row[None, :] + t[:, None]
        mask = (t < L)[:, None] & mask_d[None, :]
        _pre, dt = _dt(delta_ptr, offsets, mask, bias[None, :], SOFTPLUS, COMPUTE)
        B = _rows(B_ptr, batch, group, t, t < L, state_offsets, mask_dn, n, mask_n, sb_b, sb_g, sb_n, sb_l, B_VARYING,
                  COMPUTE)
        _bu, x = _scan_chunk(_load(u_ptr + offsets, mask, COMPUTE), dt, B, A, state, CHUNK)
        state = _row_at(x, steps, CHUNK - 1)
        total_dt += tl.sum(dt, axis=0)
        chunk += 1
    out = part_row * D * N + state_offsets
    tl.store(end_ptr + out, state, mask=mask_dn)
    tl.store(decay_ptr + out, tl.exp(total_dt[None, :, None] * A), mask=mask_dn)


@triton.jit
def _segment_summary_bwd_kernel(end_ptr, decay_ptr, delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, grad_out_ptr, L, D,
                                Dg, N, n_chunks, segment_chunks, part_chunks, parts, sc_b, sc_g, sc_n, sc_l,
                                SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                                C_VARYING: tl.constexpr, COMPUTE: tl.constexpr, CHUNK: tl.constexpr,
                                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr):
    """The adjoint of each part of the segments but the first from a zero carry at its end: the gradient G reaching
    the state before it, and its total decay exp(A * sum dt), (B, (S - 1) * parts, D, N).

    No reverse scan: the adjoint recurrence unrolled, ``G = sum_t exp(A * (dt_0 + ... + dt_t)) C_t dy_t`` over the
    part's steps t, walked in time order, one exp an element."""
    batch, group, d, mask_d, n, mask_n, state_offsets, mask_dn, row = _program_coords(
        L, D, Dg, N, BLOCK_D, BLOCK_N, N_LANES)
    first, end, part_row = _summary_part(n_chunks, segment_chunks, part_chunks, parts, 1)
    A, bias, _skip = _channel_params(A_ptr, bias_ptr, bias_ptr, d, mask_d, state_offsets, mask_dn, HAS_BIAS,
                                     False, COMPUTE, BLOCK_D)
    entering = tl.zeros_like(A)
    total_dt = tl.zeros([BLOCK_D], COMPUTE)
    chunk = first
    while chunk < end:
        t = chunk * CHUNK + tl.arange(0, CHUNK)
        mask_t = t < L
        mask = mask_t[:, None] & mask_d[None, :]
        offsets = row[None, :] + t[:, None]
        _pre, dt = _dt(delta_ptr, offsets, mask, bias[None, :], SOFTPLUS, COMPUTE)
        C = _rows(C_ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, sc_b, sc_g, sc_n, sc_l,
                  C_VARYING, COMPUTE)
        grad = _load(grad_out_ptr + offsets, mask, COMPUTE)
        if HAS_Z:
            z = _load(z_ptr + offsets, mask, COMPUTE)
            grad = grad * z * tl.sigmoid(z)
        since_start = total_dt[None, :] + tl.cumsum(dt, axis=0)  # (CHUNK, BLOCK_D): dt_0 + ... + dt_t
        entering += tl.sum(_decay(_per_state(since_start), A[None, :, :, :]) * _per_state(grad) * C, axis=0)
        total_dt += tl.sum(dt, axis=0)
        chunk += 1
    out = part_row * D * N + state_offsets
    tl.store(end_ptr + out, entering, mask=mask_dn)
    tl.store(decay_ptr + out, tl.exp(total_dt[None, :, None] * A), mask=mask_dn)


@triton.jit
def _compose_segments_kernel(end_ptr, decay_ptr, init_ptr, entering_ptr, size, n_segments, parts,
                             HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, PARTS: tl.constexpr, BLOCK: tl.constexpr):
    """The carry entering each segment, (B, S, D*N), from the summaries of the parts of the other segments,
    (B, (S - 1) * parts, D*N): ``entering[s] = carry``, then ``carry = decay[p] * carry + end[p]`` over segment
    s's parts p in order, the parts composed first as a (PARTS, BLOCK) scan (one load's latency a segment).

    In time order from the initial state (forward; the last segment has no summaries), or from the last segment
    back with d last_state (REVERSE; the first segment has none, and parts are taken last first).
    """
    batch = tl.program_id(0)
    e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = e < size
    if HAS_INIT:
        carry = tl.load(init_ptr + batch * size + e, mask=mask, other=0)
    else:
        carry = tl.zeros([BLOCK], end_ptr.dtype.element_ty)
    j = tl.arange(0, PARTS)
    mask_parts = (j < parts)[:, None] & mask[None, :]
    n_parts = (n_segments - 1) * parts
    i = 0
    while i < n_segments:
        segment = n_segments - 1 - i if REVERSE else i
        tl.store(entering_ptr + (batch * n_segments + segment) * size + e, carry, mask=mask)
        if i < n_segments - 1:
            part = (segment - 1) * parts + parts - 1 - j if REVERSE else segment * parts + j
            offsets = (batch * n_parts + part)[:, None] * size + e[None, :]
            # rows past the parts are the identity (decay 1, end 0), so the scan's last row composes them all (a scan,
            # not tl.reduce: the composition is not commutative, and tl.reduce may combine lanes in either order)
            decay, end = tl.associative_scan((tl.load(decay_ptr + offsets, mask=mask_parts, other=1),
                                              tl.load(end_ptr + offsets, mask=mask_parts, other=0)),
                                             axis=0, combine_fn=linear_combine)
            last = (j == PARTS - 1)[:, None]
            carry = tl.sum(tl.where(last, decay, 0), axis=0) * carry + tl.sum(tl.where(last, end, 0), axis=0)
        i += 1


@triton.jit
def _store_output(out_ptr, ungated_ptr, y, z, offsets, mask, HAS_Z: tl.constexpr, SAVE_UNGATED: tl.constexpr):
    """Store y (CHUNK, BLOCK_D) at ``offsets``, gated by z * sigmoid(z) when there is a z (and with SAVE_UNGATED, y
    before the gate at ``ungated_ptr``, for the backward)."""
    if SAVE_UNGATED:
        tl.store(ungated_ptr + offsets, y.to(ungated_ptr.dtype.element_ty), mask=mask)
    if HAS_Z:
        y = y * z * tl.sigmoid(z)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _channel_loads(u_ptr, delta_ptr, z_ptr, offsets, mask, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr):
    """u, delta and z (0 without one) at ``offsets``, (CHUNK, BLOCK_D)."""
    z = _load(z_ptr + offsets, mask, COMPUTE) if HAS_Z else tl.zeros(offsets.shape, COMPUTE)
    return _load(u_ptr + offsets, mask, COMPUTE), _load(delta_ptr + offsets, mask, COMPUTE), z


@triton.jit
def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, start_ptr, out_ptr, last_ptr,
                     starts_ptr, ungated_ptr, L, D, Dg, N, n_chunks, segment_chunks, sb_b, sb_g, sb_n, sb_l, sc_b,
                     sc_g, sc_n, sc_l,
                     SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     HAS_START: tl.constexpr, SAVE_STARTS: tl.constexpr, SAVE_UNGATED: tl.constexpr,
                     B_VARYING: tl.constexpr, C_VARYING: tl.constexpr, COMPUTE: tl.constexpr, CHUNK: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr):
    batch, group, d, mask_d, n, mask_n, state_offsets, mask_dn, row = _program_coords(
        L, D, Dg, N, BLOCK_D, BLOCK_N, N_LANES)
    segment, first, end, segment_row = _segment(n_chunks, segment_chunks)
    A, bias, skip = _channel_params(A_ptr, bias_ptr, D_ptr, d, mask_d, state_offsets, mask_dn, HAS_BIAS, HAS_D,
                                    COMPUTE, BLOCK_D)
    if HAS_START:  # the state entering this segment, (B, S, D, N)
        state = _load(start_ptr + segment_row * D * N + state_offsets, mask_dn, COMPUTE)
    else:
        state = tl.zeros_like(A)
    steps = tl.arange(0, CHUNK)
    # u, delta and z of the next chunk are loaded before this chunk's work, which hides their latency (one warp a
    # program leaves a scheduler few warps to hide it with); B and C are loaded in the iteration: held a chunk ahead
    # in the scan's layout they would take 64 registers a thread each
    chunk = first
    t = chunk * CHUNK + steps
    u_next, delta_next, z_next = _channel_loads(u_ptr, delta_ptr, z_ptr, row[None, :] + t[:, None],
                                                (t < L)[:, None] & mask_d[None, :], HAS_Z, COMPUTE)
    while chunk < end:
        u, delta, z = u_next, delta_next, z_next
        t = chunk * CHUNK + steps
        mask_t = t < L
        offsets = row[None, :] + t[:, None]
        mask = mask_t[:, None] & mask_d[None, :]
        u_next, delta_next, z_next = _channel_loads(u_ptr, delta_ptr, z_ptr, offsets + CHUNK,
                                                    (t + CHUNK < L)[:, None] & mask_d[None, :], HAS_Z, COMPUTE)
        if SAVE_STARTS:
            tl.store(_chunk_start(starts_ptr, batch, n_chunks, chunk, D, N, state_offsets), state, mask=mask_dn)
        B = _rows(B_ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, sb_b, sb_g, sb_n, sb_l,
                  B_VARYING, COMPUTE)
        C = _rows(C_ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, sc_b, sc_g, sc_n, sc_l,
                  C_VARYING, COMPUTE)
        _pre, dt = _activate(delta + bias[None, :], mask, SOFTPLUS)
        _bu, x = _scan_chunk(u, dt, B, A, state, CHUNK)
        y = _sum_states(x * C) + u * skip[None, :]
        _store_output(out_ptr, ungated_ptr, y, z, offsets, mask, HAS_Z, SAVE_UNGATED)
        state = _row_at(x, steps, CHUNK - 1)
        chunk += 1
    tl.store(last_ptr + batch * D * N + state_offsets, state, mask=mask_dn & (segment == tl.num_programs(2) - 1))


@triton.jit
def _backward_loads(u_ptr, delta_ptr, z_ptr, grad_out_ptr, ungated_ptr, row, chunk, valid, steps, L, mask_d,
                    HAS_Z: tl.constexpr, COMPUTE: tl.constexpr, CHUNK: tl.constexpr):
    """u, delta, z, dy and y before the gate (dy without z) of ``chunk``, (CHUNK, BLOCK_D) each, zeros where not
    ``valid``."""
    t = chunk * CHUNK + steps
    offsets = row[None, :] + t[:, None]
    mask = ((t < L) & valid)[:, None] & mask_d[None, :]
    u, delta, z = _channel_loads(u_ptr, delta_ptr, z_ptr, offsets, mask, HAS_Z, COMPUTE)
    grad = _load(grad_out_ptr + offsets, mask, COMPUTE)
    return u, delta, z, grad, _load(ungated_ptr + offsets, mask, COMPUTE) if HAS_Z else grad


@triton.jit
def _scan_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, starts_ptr, ungated_ptr,
                     grad_out_ptr, carry_ptr, du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dskip_ptr, dbias_ptr,
                     dh0_ptr, L, D, Dg, N, n_chunks, segment_chunks, sb_b, sb_g, sb_n, sb_l, sc_b, sc_g, sc_n, sc_l,
                     SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     B_VARYING: tl.constexpr, C_VARYING: tl.constexpr, COMPUTE: tl.constexpr, CHUNK: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr):
    batch, group, d, mask_d, n, mask_n, state_offsets, mask_dn, row = _program_coords(
        L, D, Dg, N, BLOCK_D, BLOCK_N, N_LANES)
    _segment_index, first, end, segment_row = _segment(n_chunks, segment_chunks)
    A, bias, skip = _channel_params(A_ptr, bias_ptr, D_ptr, d, mask_d, state_offsets, mask_dn, HAS_BIAS, HAS_D,
                                    COMPUTE, BLOCK_D)
    # carry: gradient reaching the state just before the chunk processed last; starts as the gradient
    # entering the segment's end, (B, S, D, N) (d last_state for the last segment)
    carry = _load(carry_ptr + segment_row * D * N + state_offsets, mask_dn, COMPUTE)
    grad_A = tl.zeros_like(A)
    grad_B_fixed = tl.zeros_like(A)  # used when B is time-invariant
    grad_C_fixed = tl.zeros_like(A)
    grad_skip = tl.zeros([BLOCK_D], COMPUTE)
    grad_bias = tl.zeros([BLOCK_D], COMPUTE)
    steps = tl.arange(0, CHUNK)
    # per-time B/C gradients go to (batch, G, channel blocks, N, L) partial sums, (CHUNK, N_REG, N_LANES) a chunk
    partial_offsets = ((batch * tl.num_programs(1) + tl.program_id(1)).to(tl.int64) * N + n[None, :, :]) * L
    # the chunk before's u, delta, z, dy and y are loaded before this chunk's work, which hides their latency (as in
    # the forward); loading its start state, B, C and delta a step later ahead too was slower (registers)
    chunk = end - 1
    u_next, delta_next, z_next, grad_next, y_next = _backward_loads(
        u_ptr, delta_ptr, z_ptr, grad_out_ptr, ungated_ptr, row, chunk, True, steps, L, mask_d, HAS_Z, COMPUTE, CHUNK)
    while chunk >= first:
        u, delta, z, grad, y = u_next, delta_next, z_next, grad_next, y_next
        u_next, delta_next, z_next, grad_next, y_next = _backward_loads(
            u_ptr, delta_ptr, z_ptr, grad_out_ptr, ungated_ptr, row, chunk - 1, chunk > first, steps, L, mask_d,
            HAS_Z, COMPUTE, CHUNK)
        t = chunk * CHUNK + steps
        mask_t = t < L
        mask = mask_t[:, None] & mask_d[None, :]
        mask_tn = mask_t[:, None, None] & mask_n[None, :, :]
        offsets = row[None, :] + t[:, None]
        state0 = tl.load(_chunk_start(starts_ptr, batch, n_chunks, chunk, D, N, state_offsets), mask=mask_dn, other=0)
        pre, dt = _activate(delta + bias[None, :], mask, SOFTPLUS)
        B = _rows(B_ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, sb_b, sb_g, sb_n, sb_l,
                  B_VARYING, COMPUTE)
        bu, x = _scan_chunk(u, dt, B, A, state0, CHUNK)
        C = _rows(C_ptr, batch, group, t, mask_t, state_offsets, mask_dn, n, mask_n, sc_b, sc_g, sc_n, sc_l,
                  C_VARYING, COMPUTE)
        if HAS_Z:
            gate = tl.sigmoid(z)
            tl.store(dz_ptr + offsets, grad * y * gate * (1 + z * (1 - gate)), mask=mask)
            grad = grad * z * gate
        grad_skip += tl.sum(grad * u, axis=0)
        lam, carry = _chunk_adjoint(delta_ptr, offsets, mask, t, L, steps, bias, A, dt, grad, C, carry, SOFTPLUS,
                                    COMPUTE, CHUNK)
        if C_VARYING:
            tl.store(dC_ptr + partial_offsets + t[:, None, None], tl.sum(_per_state(grad) * x, axis=2), mask=mask_tn)
        else:
            grad_C_fixed += tl.sum(_per_state(grad) * x, axis=0)
        dtu = _per_state(dt * u)
        if B_VARYING:
            tl.store(dB_ptr + partial_offsets + t[:, None, None], tl.sum(lam * dtu, axis=2), mask=mask_tn)
        else:
            grad_B_fixed += tl.sum(lam * dtu, axis=0)
        decay_share = lam * (x - bu)  # lam_t * a_t * x_{t-1}
        grad_A += tl.sum(decay_share * _per_state(dt), axis=0)
        lam_B = _sum_states(lam * B)
        grad_dt = _sum_states(decay_share * A[None, :, :, :]) + u * lam_B
        grad_delta = grad_dt * tl.sigmoid(pre) if SOFTPLUS else grad_dt
        grad_delta = tl.where(mask, grad_delta, 0)
        grad_bias += tl.sum(grad_delta, axis=0)
        tl.store(ddelta_ptr + offsets, grad_delta, mask=mask)
        tl.store(du_ptr + offsets, dt * lam_B + grad * skip[None, :], mask=mask)
        chunk -= 1
    # per-(batch row, segment) partial sums; the carry of segment 0 is d initial_state
    per_segment = segment_row * D * N + state_offsets
    tl.store(dh0_ptr + per_segment, carry, mask=mask_dn)
    tl.store(dA_ptr + per_segment, grad_A, mask=mask_dn)
    if not B_VARYING:
        tl.store(dB_ptr + per_segment, grad_B_fixed, mask=mask_dn)
    if not C_VARYING:
        tl.store(dC_ptr + per_segment, grad_C_fixed, mask=mask_dn)
    tl.store(dskip_ptr + segment_row * D + d, grad_skip, mask=mask_d)
    tl.store(dbias_ptr + segment_row * D + d, grad_bias, mask=mask_d)


def _row_strides(M: torch.Tensor) -> tuple[int, int, int, int]:
    """(batch, group, state, time) strides of B or C seen as (batch, G, N, L); group stride 0 when ungrouped."""
    if M.dim() == 2:
        return (0, 0, 0, 0)
    if M.dim() == 3:
        return (M.stride(0), 0, M.stride(1), M.stride(2))
    return tuple(M.stride())


def _compose(summary_kernel, meta: dict, args: tuple, init: torch.Tensor | None, reverse: bool,
             like: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Run a segment summary kernel over the parts of ``meta["summary_grid"]``, then the sequential composition: the
    carry entering each segment, (B, S, D, N)."""
    batch, n_segments, dim, d_state = shape
    _part_chunks, parts = meta["parts"]
    end, decay = (like.new_empty(batch, (n_segments - 1) * parts, dim, d_state) for _ in range(2))
    summary_kernel[meta["summary_grid"]](end, decay, *args, **meta["summary"])
    entering = like.new_empty(shape)
    parts_tile = triton.next_power_of_2(parts)
    block = min(1024, 4096 // parts_tile)  # (parts, block) tiles of 4096 elements at most; 64 a row at MAX_PARTS
    _compose_segments_kernel[(batch, triton.cdiv(dim * d_state, block))](
        end, decay, None if init is None else init.to(like.dtype).contiguous(), entering, dim * d_state, n_segments,
        parts, HAS_INIT=init is not None, REVERSE=reverse, PARTS=parts_tile, BLOCK=block,
    )
    return entering


class _TritonScan(torch.autograd.Function):
    """Fused scan: all of (u, delta, A, B, C, D, z, delta_bias, initial_state) get gradients. ``recording``: autograd
    records the call (grad mode on and an input requires grad), so that y before the gate is kept for dz."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, recording):
        u, delta = u.contiguous(), delta.contiguous()
        z = None if z is None else z.contiguous()
        A, B, C = A.contiguous(), B.contiguous(), C.contiguous()
        batch, dim, length = u.shape
        d_state = A.shape[1]
        groups = scan_groups(B, C)
        compute = compute_dtype(u.dtype)
        meta = _meta(u, A, B, C, D, z, delta_bias, softplus, groups, backward=False)
        n_chunks, segment_chunks, n_segments = meta["chunks"]
        out = torch.empty_like(u)
        # y before the gate, for dz (as mamba_ssm's CUDA scan keeps it): the backward need not recompute sum_n C x
        ungated = torch.empty_like(u) if z is not None and recording else None
        last = u.new_empty(batch, dim, d_state, dtype=compute)
        # the state at every chunk start, for the backward: as large as a float32 u when N is 16, so only recorded
        starts = u.new_empty(batch, n_chunks, dim, d_state, dtype=compute) if recording else None
        start = None if initial_state is None else initial_state.contiguous()
        sizes = (length, dim, dim // groups, d_state, n_chunks, segment_chunks)
        if n_segments > 1:
            start = _compose(_segment_summary_fwd_kernel, meta,
                             (u, delta, A, B, delta_bias, *sizes, *meta["parts"], *_row_strides(B)),
                             start, False, last, (batch, n_segments, dim, d_state))
        _scan_fwd_kernel[meta["grid"]](
            u, delta, A, B, C, D, z, delta_bias, start, out, last, starts, ungated, *sizes, *_row_strides(B),
            *_row_strides(C), HAS_START=start is not None, SAVE_STARTS=recording, SAVE_UNGATED=ungated is not None,
            **meta["scan"],
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts, ungated)
        ctx.softplus, ctx.groups = softplus, groups
        ctx.h0_dtype = None if initial_state is None else initial_state.dtype
        return out, last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, delta, A, B, C, D, z, delta_bias, starts, ungated = ctx.saved_tensors
        batch, dim, length = u.shape
        d_state, groups = A.shape[1], ctx.groups
        meta = _meta(u, A, B, C, D, z, delta_bias, ctx.softplus, groups, backward=True)
        n_chunks, segment_chunks, n_segments = meta["chunks"]
        blocks = meta["grid"][1]
        f32 = dict(dtype=compute_dtype(u.dtype), device=u.device)
        grad_out, grad_last = grad_out.contiguous(), grad_last.contiguous()
        sizes = (length, dim, dim // groups, d_state, n_chunks, segment_chunks)
        carry = grad_last
        if n_segments > 1:
            carry = _compose(_segment_summary_bwd_kernel, meta,
                             (delta, A, C, z, delta_bias, grad_out, *sizes, *meta["parts"], *_row_strides(C)),
                             grad_last, True, starts, (batch, n_segments, dim, d_state))
        # per-element gradients are stored in their input's dtype (tl.store rounds once)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        per_segment = (batch * n_segments, dim, d_state)
        per_time = (batch, blocks, d_state, length)
        # every element is written by the kernel (per-time rows by every channel block at every step)
        dB = torch.empty(per_time if B.dim() > 2 else per_segment, **f32)
        dC = torch.empty(per_time if C.dim() > 2 else per_segment, **f32)
        dA, dh0 = torch.empty(per_segment, **f32), torch.empty(per_segment, **f32)
        dskip, dbias = torch.empty(batch * n_segments, dim, **f32), torch.empty(batch * n_segments, dim, **f32)
        _scan_bwd_kernel[meta["grid"]](
            u, delta, A, B, C, D, z, delta_bias, starts, ungated, grad_out, carry,
            du, ddelta, dz, dB, dC, dA, dskip, dbias, dh0, *sizes,
            *_row_strides(B), *_row_strides(C), **meta["scan"],
        )

        def rows_grad(M: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
            if M.dim() == 2:
                return partial.sum(0).to(M.dtype)
            grouped = partial.view(batch, groups, blocks // groups, d_state, length).sum(2)
            return (grouped if M.dim() == 4 else grouped.sum(1)).to(M.dtype)

        initial_grad = dh0.view(batch, n_segments, dim, d_state)[:, 0]
        return (
            du, ddelta, dA.sum(0).to(A.dtype), rows_grad(B, dB), rows_grad(C, dC),
            None if D is None else dskip.sum(0).to(D.dtype), dz,
            None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
            None if ctx.h0_dtype is None else initial_grad.to(ctx.h0_dtype), None, None,
        )


def _meta(u, A, B, C, D, z, delta_bias, softplus, groups, backward: bool) -> dict:
    """Launch grids, segment split and the compile-time constants of the forward kernels, or of the backward ones
    (``backward``): "scan" and "grid" for the scan kernel at its tile, "summary" and "summary_grid" for its segment
    summary at ``SUMMARY_TILE``, and "parts", (chunks a part, parts a segment): the summary splits each segment it
    summarises into parts until it has about ``SUMMARY_PROGRAMS`` programs."""
    batch, dim, length = u.shape
    block_n = triton.next_power_of_2(A.shape[1])

    def channel_blocks(tile: Tile) -> int:  # programs over the channels, as _program_coords splits them
        return groups * triton.cdiv(dim // groups, tile.block_d)

    def tile_constants(tile: Tile) -> dict:
        return dict(num_warps=tile.warps, BLOCK_D=tile.block_d, N_LANES=min(tile.state_lanes, block_n))

    scan_tile = BACKWARD_TILE if backward else FORWARD_TILE
    blocks = channel_blocks(scan_tile)
    n_chunks = triton.cdiv(length, CHUNK)
    wanted = max(1, min(n_chunks, SEGMENT_PROGRAMS // (batch * blocks)))
    segment_chunks = triton.cdiv(n_chunks, wanted)
    n_segments = triton.cdiv(n_chunks, segment_chunks)
    summarised = batch * channel_blocks(SUMMARY_TILE) * max(1, n_segments - 1)  # summary programs of whole segments
    part_chunks = triton.cdiv(segment_chunks, max(1, min(segment_chunks, MAX_PARTS, SUMMARY_PROGRAMS // summarised)))
    parts = triton.cdiv(segment_chunks, part_chunks)
    shared = dict(
        SOFTPLUS=softplus, HAS_BIAS=delta_bias is not None,
        COMPUTE=tl.float64 if compute_dtype(u.dtype) == torch.float64 else tl.float32, CHUNK=CHUNK, BLOCK_N=block_n,
    )
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, B_VARYING=B.dim() > 2, C_VARYING=C.dim() > 2)
    summary = dict(shared, **tile_constants(SUMMARY_TILE),
                   **({"HAS_Z": flags["HAS_Z"], "C_VARYING": flags["C_VARYING"]} if backward
                      else {"B_VARYING": flags["B_VARYING"]}))
    return {"grid": (batch, blocks, n_segments), "chunks": (n_chunks, segment_chunks, n_segments),
            "scan": dict(shared, **tile_constants(scan_tile), **flags), "summary": summary,
            "summary_grid": (batch, channel_blocks(SUMMARY_TILE), (n_segments - 1) * parts),
            "parts": (part_chunks, parts)}


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    return_last_state=False,
):
    """The "triton" backend of :func:`seqpipe.kernels.selective_scan` (same arguments and shapes).

    16-bit inputs are read as they are (no float32 copy): y, du, d delta and dz come back in their input's
    dtype, the last state and the other gradients' sums are made in float32.
    """
    inputs = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    recording = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    y, last_state = _TritonScan.apply(*inputs, delta_softplus, recording)
    return (y, last_state) if return_last_state else y


@triton.jit
def _state_update_kernel(state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, new_state_ptr,
                         D, Dg, N, sb_b, sb_g, sc_b, sc_g, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
                         HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_N: tl.constexpr):
    batch = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d < D
    n = tl.arange(0, BLOCK_N)
    mask_dn = mask_d[:, None] & (n < N)[None, :]
    group = d // Dg  # per channel, so a block may straddle groups
    state_offsets = batch * D * N + d[:, None] * N + n[None, :]
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0).to(COMPUTE) if HAS_BIAS else tl.zeros([BLOCK_D], COMPUTE)
    _, dt = _dt(dt_ptr, batch * D + d, mask_d, bias, SOFTPLUS, COMPUTE)
    x = tl.load(x_ptr + batch * D + d, mask=mask_d, other=0).to(COMPUTE)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0).to(COMPUTE)
    B = tl.load(B_ptr + batch * sb_b + group[:, None] * sb_g + n[None, :], mask=mask_dn, other=0).to(COMPUTE)
    C = tl.load(C_ptr + batch * sc_b + group[:, None] * sc_g + n[None, :], mask=mask_dn, other=0).to(COMPUTE)
    state = tl.load(state_ptr + state_offsets, mask=mask_dn, other=0).to(COMPUTE)
    state = state * tl.exp(dt[:, None] * A) + (dt * x)[:, None] * B
    tl.store(new_state_ptr + state_offsets, state.to(new_state_ptr.dtype.element_ty), mask=mask_dn)
    y = tl.sum(state * C, axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + d, mask=mask_d, other=0).to(COMPUTE)
    if HAS_Z:
        z = tl.load(z_ptr + batch * D + d, mask=mask_d, other=0).to(COMPUTE)
        y = y * z * tl.sigmoid(z)
    tl.store(y_ptr + batch * D + d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Triton backend of :func:`seqpipe.kernels.selective_state_update` (no autograd)."""
    batch, dim, d_state = state.shape
    state, x, dt, A = state.contiguous(), x.contiguous(), dt.contiguous(), A.contiguous()
    B, C = (M.contiguous() if M.dim() == 3 else M.contiguous().unsqueeze(1) for M in (B, C))
    groups = max(B.shape[1], C.shape[1])
    z = None if z is None else z.contiguous()
    y, new_state = torch.empty_like(x), torch.empty_like(state)
    block_d = min(STATE_UPDATE_BLOCK_D, triton.next_power_of_2(dim))
    _state_update_kernel[(batch, triton.cdiv(dim, block_d))](
        state, x, dt, A, B, C, D, z, dt_bias, y, new_state, dim, dim // groups, d_state,
        B.stride(0), B.stride(1) if B.shape[1] > 1 else 0, C.stride(0), C.stride(1) if C.shape[1] > 1 else 0,
        SOFTPLUS=dt_softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        COMPUTE=tl.float64 if compute_dtype(x.dtype) == torch.float64 else tl.float32,
        BLOCK_D=block_d, BLOCK_N=triton.next_power_of_2(d_state),
    )
    return y, new_state
