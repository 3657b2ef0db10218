"""Selective scan backends and the one-token state update against the float64 reference.

The Triton kernels run on CUDA when there is a GPU, and otherwise on CPU under TRITON_INTERPRET=1, which
must be set before the kernels are defined (seqpipe.kernels.scan_triton is imported lazily, after this).
Interpreted tests use tiny tiles (CHUNK 4, 4 channels a program, 2 of 4 states on lanes) so several chunks, channel
blocks and states a thread are exercised; one test runs the shipped tiles.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import seqpipe.kernels.scan_chunked as scan_chunked  # noqa: E402
from seqpipe.kernels import selective_scan, selective_scan_ref, selective_state_update  # noqa: E402
from seqpipe.kernels.backends import triton_importable  # noqa: E402
from triton_params import triton_marks, triton_param  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
# (backend, device) pairs; triton cases are skipped, visibly, where they cannot run (no triton, CPU uninterpreted)
TRITON = [triton_param(d) for d in DEVICES]
RUNNABLE = [pytest.param("chunked", d, id=f"chunked-{d}") for d in DEVICES] + TRITON
OPTION_CASES = {
    "plain": dict(),
    "D_z_bias_softplus": dict(D=True, z=True, delta_bias=True, softplus=True),
    "grouped": dict(bc="grouped", D=True, softplus=True),
    "B_grouped_C_shared": dict(bc="mixed", z=True),
    "time_invariant": dict(bc="fixed", delta_bias=True),
    "initial_state": dict(initial_state=True, D=True, softplus=True),
    "delta_of_both_signs": dict(signed_delta=True, D=True),
    "three_states": dict(d_state=3, D=True, softplus=True),  # N not a multiple of the state lanes: masked states
}
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Blocks and tiles much shorter than the test sequences, so the carries across them are tested."""
    monkeypatch.setattr(scan_chunked, "BLOCK_ELEMENTS", 2 * 8 * 4 * 5)
    if triton_importable() and (HAS_CUDA or INTERPRETED):
        import seqpipe.kernels.scan_triton as scan_triton

        monkeypatch.setattr(scan_triton, "CHUNK", 4)
        monkeypatch.setattr(scan_triton, "FORWARD_TILE", scan_triton.Tile(block_d=4, warps=1, state_lanes=2))
        monkeypatch.setattr(scan_triton, "SUMMARY_TILE", scan_triton.Tile(block_d=4, warps=1, state_lanes=2))
        monkeypatch.setattr(scan_triton, "BACKWARD_TILE", scan_triton.Tile(block_d=4, warps=1, state_lanes=2))
        # several segments of uneven length per sequence (see test_triton_segment_splits for others), summarised in
        # parts (see test_triton_summaries_in_parts)
        monkeypatch.setattr(scan_triton, "SEGMENT_PROGRAMS", 12)
        monkeypatch.setattr(scan_triton, "SUMMARY_PROGRAMS", 24)


def make_inputs(seed=0, batch=2, dim=8, d_state=4, length=13, bc="variable", D=False, z=False, delta_bias=False,
                initial_state=False, softplus=False, signed_delta=False, dtype=torch.float64, device="cpu"):
    """Seeded random inputs (never zeros) as a dict of scan keyword arguments with requires_grad set; without
    softplus, delta is positive unless ``signed_delta`` (a decay above 1 at some steps)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(device, dtype)

    groups = 2
    rows = {"variable": (batch, d_state, length), "grouped": (batch, groups, d_state, length),
            "fixed": (dim, d_state)}
    inputs = {
        "u": rand(batch, dim, length),
        # softplus takes any pre-activation; without it delta is dt itself, so keep it positive
        "delta": rand(batch, dim, length, scale=0.5, shift=-0.5) if softplus or signed_delta
        else rand(batch, dim, length, scale=0.3).abs() + 0.05,
        "A": -rand(dim, d_state, scale=0.5, shift=1.0).abs(),
        "B": rand(*rows["grouped" if bc == "mixed" else bc]),
        "C": rand(*rows["variable" if bc == "mixed" else bc]),
        "D": rand(dim) if D else None,
        "z": rand(batch, dim, length) if z else None,
        "delta_bias": rand(dim, scale=0.3) if delta_bias else None,
        "initial_state": rand(batch, dim, d_state).to(torch.float64 if dtype == torch.float64 else torch.float32)
        if initial_state else None,
    }
    for value in inputs.values():
        if value is not None:
            value.requires_grad_(True)
    return inputs, softplus


def run(inputs, softplus, backend, return_last_state=True):
    return selective_scan(**inputs, delta_softplus=softplus, return_last_state=return_last_state, backend=backend)


def outputs_and_grads(inputs, softplus, backend):
    """(y, last_state) and the gradients of a fixed random functional of both, for every input given."""
    y, last = run(inputs, softplus, backend)
    gen = torch.Generator().manual_seed(123)
    weights_y = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
    weights_last = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.device, last.dtype)
    loss = (y * weights_y).sum() + (last * weights_last).sum()
    given = {name: value for name, value in inputs.items() if value is not None}
    grads = torch.autograd.grad(loss, list(given.values()))
    return {"y": y, "last_state": last, **{f"grad_{name}": g for name, g in zip(given, grads)}}


def launch_plans(inputs, softplus, groups) -> dict:
    """``scan_triton._meta`` of these inputs for the forward (False) and the backward (True): grids, segments, parts."""
    import seqpipe.kernels.scan_triton as scan_triton

    return {backward: scan_triton._meta(*(inputs[name] for name in ("u", "A", "B", "C", "D", "z", "delta_bias")),
                                        softplus, groups, backward=backward)
            for backward in (False, True)}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def assert_all_close(actual: dict, expected: dict, tol: float) -> None:
    assert actual.keys() == expected.keys()
    errors = {name: relative_error(actual[name], expected[name]) for name in expected}
    assert max(errors.values()) <= tol, errors


def direct_formula(u, delta, A, B, C, initial_state):
    """y_t = sum_n C_tn (exp(A_n S_t) h0_n + sum_{s<=t} exp(A_n (S_t - S_s)) dt_s B_sn u_s), S_t = sum_{r<=t} dt_r.

    An independent float64 check of the reference: no recurrence, plain Python loops, (B, N, L) B and C.
    """
    batch, dim, length = u.shape
    y = torch.zeros(batch, dim, length, dtype=torch.float64)
    S = delta.cumsum(-1)
    for b in range(batch):
        for d in range(dim):
            for t in range(length):
                total = (C[b, :, t] * torch.exp(A[d] * S[b, d, t]) * initial_state[b, d]).sum()
                for s in range(t + 1):
                    decay = torch.exp(A[d] * (S[b, d, t] - S[b, d, s]))
                    total = total + (C[b, :, t] * decay * delta[b, d, s] * B[b, :, s] * u[b, d, s]).sum()
                y[b, d, t] = total
    return y


def test_reference_matches_direct_formula():
    inputs, _ = make_inputs(batch=2, dim=3, d_state=2, length=7, initial_state=True)
    values = {name: value.detach() for name, value in inputs.items() if value is not None}
    expected = direct_formula(**values)
    actual = selective_scan_ref(**values)
    assert relative_error(actual, expected) < 1e-13


@pytest.mark.parametrize("case", OPTION_CASES)
@pytest.mark.parametrize("backend,device", RUNNABLE)
def test_backend_matches_reference_float64(backend, device, case):
    inputs, softplus = make_inputs(device=device, **OPTION_CASES[case])
    expected = outputs_and_grads(inputs, softplus, "ref")
    actual = outputs_and_grads(inputs, softplus, backend)
    assert_all_close(actual, expected, tol=1e-12)


@pytest.mark.parametrize("segment_programs", [1, 10**6])
@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_segment_splits(device, segment_programs, monkeypatch):
    """One segment per sequence, and one chunk per segment, both equal the float64 reference."""
    import seqpipe.kernels.scan_triton as scan_triton

    monkeypatch.setattr(scan_triton, "SEGMENT_PROGRAMS", segment_programs)
    inputs, softplus = make_inputs(seed=5, length=23, D=True, z=True, delta_bias=True, initial_state=True,
                                   softplus=True, device=device)
    expected = outputs_and_grads(*make_inputs(seed=5, length=23, D=True, z=True, delta_bias=True,
                                              initial_state=True, softplus=True), "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-10)


@pytest.mark.parametrize("block_d,backward_block_d", [(4, 2), (2, 4)])
@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_kernels_have_their_own_channel_blocks(device, block_d, backward_block_d, monkeypatch):
    """The forward scan, the backward scan and the segment summaries each at another channel block (and so another
    segment split in each direction: one segment against three at these sizes, each way round; a summary takes
    its scan's segments, at a block of 8 channels where a group has 4): the float64 reference."""
    import seqpipe.kernels.scan_triton as scan_triton

    Tile = scan_triton.Tile
    monkeypatch.setattr(scan_triton, "FORWARD_TILE", Tile(block_d=block_d, warps=1, state_lanes=2))
    monkeypatch.setattr(scan_triton, "BACKWARD_TILE", Tile(block_d=backward_block_d, warps=1, state_lanes=4))
    monkeypatch.setattr(scan_triton, "SUMMARY_TILE", Tile(block_d=8, warps=1, state_lanes=1))
    options = dict(seed=6, length=23, bc="grouped", D=True, z=True, delta_bias=True, initial_state=True, softplus=True)
    expected = outputs_and_grads(*make_inputs(**options), "ref")
    inputs, softplus = make_inputs(**options, device=device)
    metas = launch_plans(inputs, softplus, 2)
    grids = {backward: meta["grid"] for backward, meta in metas.items()}
    assert {grids[False], grids[True]} == {(2, 2, 3), (2, 4, 1)}  # (batch, channel blocks, segments)
    # a summary for each part of the segments but one (the last forward, the first backward)
    assert all(meta["summary_grid"] == (2, 2, (meta["grid"][2] - 1) * meta["parts"][1]) for meta in metas.values())
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-10)


@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_summaries_in_parts(device):
    """13 chunks in segments of 5, 5 and 3 chunks, each summarised in parts of 2, 2 and 1 chunks, the last segment's
    third part empty (the backward summarises it, the forward does not): the float64 reference."""
    options = dict(seed=9, length=50, D=True, z=True, delta_bias=True, initial_state=True, softplus=True)
    expected = outputs_and_grads(*make_inputs(**options), "ref")
    inputs, softplus = make_inputs(**options, device=device)
    for meta in launch_plans(inputs, softplus, 1).values():
        assert meta["chunks"] == (13, 5, 3) and meta["parts"] == (2, 3) and meta["summary_grid"] == (2, 2, 6)
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-10)


@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_summaries_in_many_parts(device, monkeypatch):
    """Two segments of 32 and 31 chunks, in 32 parts of one chunk (the last segment's last part empty), so the
    composition scans 32 parts a segment over several element blocks (256 states, 128 a block): the float64
    reference."""
    import seqpipe.kernels.scan_triton as scan_triton

    monkeypatch.setattr(scan_triton, "SEGMENT_PROGRAMS", 8)
    monkeypatch.setattr(scan_triton, "SUMMARY_PROGRAMS", 128)
    options = dict(seed=10, batch=1, dim=16, d_state=16, length=250, D=True, z=True, delta_bias=True,
                   initial_state=True, softplus=True)
    expected = outputs_and_grads(*make_inputs(**options), "ref")
    inputs, softplus = make_inputs(**options, device=device)
    for meta in launch_plans(inputs, softplus, 1).values():
        assert meta["chunks"] == (63, 32, 2) and meta["parts"] == (1, 32)
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-10)


@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_summaries_at_a_larger_channel_block_than_the_backward(device, monkeypatch):
    """As shipped, the segment summaries' channel block is larger than the backward scan's, with several segments
    in both passes, and 6 channels a group, a multiple of neither block: the float64 reference."""
    import seqpipe.kernels.scan_triton as scan_triton

    monkeypatch.setattr(scan_triton, "SUMMARY_TILE", scan_triton.Tile(block_d=4, warps=1, state_lanes=4))
    monkeypatch.setattr(scan_triton, "BACKWARD_TILE", scan_triton.Tile(block_d=2, warps=1, state_lanes=4))
    monkeypatch.setattr(scan_triton, "SEGMENT_PROGRAMS", 40)
    options = dict(seed=7, dim=12, length=23, bc="grouped", D=True, z=True, delta_bias=True, initial_state=True,
                   softplus=True)
    expected = outputs_and_grads(*make_inputs(**options), "ref")
    inputs, softplus = make_inputs(**options, device=device)
    backward = launch_plans(inputs, softplus, 2)[True]
    # (batch, channel blocks, segments); the summaries of the two segments after the first, in one part each
    assert backward["grid"] == (2, 6, 3) and backward["summary_grid"] == (2, 4, 2)
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-10)


@pytest.mark.parametrize("case", [dict(length=40, softplus=True), dict(length=20, signed_delta=True)],
                         ids=["segments", "delta_of_both_signs"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device", [pytest.param(d, marks=triton_marks(d)) for d in DEVICES])
def test_triton_shipped_tiles(device, dtype, case, monkeypatch):
    """The shipped CHUNK and tiles (the fixture's undone) at N 16, so several states a thread: over three segments
    with a short last chunk, and with delta of both signs (decays above 1; shorter, so that float32 does not
    overflow): the float64 reference. Float32 on the GPU takes the decays' ex2.approx.ftz; the interpreter runs it
    as float64's code, so there only float64."""
    if device == "cpu" and dtype == torch.float32:
        pytest.skip("the interpreter has no ex2.approx.ftz: float32 runs float64's code")
    monkeypatch.undo()
    options = dict(seed=8, dim=16, d_state=16, D=True, z=True, delta_bias=True, initial_state=True, **case)
    inputs, softplus = make_inputs(**options, dtype=dtype, device=device)
    exact_inputs = {k: None if v is None else v.detach().double().cpu().requires_grad_() for k, v in inputs.items()}
    expected = outputs_and_grads(exact_inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, "triton"), expected, 1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("backend,device", TRITON)
def test_triton_saves_y_before_the_gate_only_when_autograd_records(backend, device):
    """With z, the forward keeps y before the gate for dz when autograd records the call: it is the scan without
    z. Without recording nothing is kept, and y is the same."""
    inputs, softplus = make_inputs(D=True, z=True, delta_bias=True, softplus=True, device=device)
    y = run(inputs, softplus, backend, return_last_state=False)
    ungated = y.grad_fn.saved_tensors[-1]
    assert relative_error(ungated, run({**inputs, "z": None}, softplus, backend, return_last_state=False)) < 1e-12
    with torch.no_grad():
        assert torch.equal(run(inputs, softplus, backend, return_last_state=False), y)


@pytest.mark.parametrize("backend,device", TRITON)
def test_triton_saves_the_chunk_starts_only_when_autograd_records(backend, device):
    """Recording, the forward keeps the state at every chunk start for the backward (B, L / CHUNK, D, N): the
    reference's last state of each prefix. Without recording it keeps nothing (and y is the same)."""
    import seqpipe.kernels.scan_triton as scan_triton

    inputs, softplus = make_inputs(D=True, z=True, delta_bias=True, softplus=True, initial_state=True, device=device)
    y = run(inputs, softplus, backend, return_last_state=False)
    starts = y.grad_fn.saved_tensors[-2]
    values = {k: None if v is None else v.detach().cpu() for k, v in inputs.items()}
    along_time = [k for k in ("u", "delta", "B", "C", "z") if values[k] is not None and values[k].dim() == 3]
    expected = [values["initial_state"]] + [
        selective_scan_ref(**{**values, **{k: values[k][..., :t] for k in along_time}}, delta_softplus=softplus,
                           return_last_state=True)[1]
        for t in range(scan_triton.CHUNK, values["u"].shape[-1], scan_triton.CHUNK)]
    assert relative_error(starts, torch.stack(expected, 1)) < 1e-12
    with torch.no_grad():
        y_inference, _ = scan_triton._TritonScan.apply(*(inputs[name] for name in NAMES), softplus, False)
    assert torch.equal(y_inference, y)


@pytest.mark.skipif(not HAS_CUDA, reason="GPU memory")
def test_triton_inference_allocates_no_chunk_starts():
    """Without autograd the forward's peak memory is y and the last state: no (B, L / CHUNK, D, N) chunk starts,
    which are as large as a float32 u at N 16 (and are there when autograd records)."""
    inputs, softplus = make_inputs(batch=1, dim=64, d_state=16, length=4096, dtype=torch.float32, device="cuda")
    y_bytes = inputs["u"].numel() * 4
    for recording, bound in ((False, lambda peak: peak < 1.1 * y_bytes), (True, lambda peak: peak > 1.9 * y_bytes)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.set_grad_enabled(recording):
            y = run(inputs, softplus, "triton", return_last_state=False)
        torch.cuda.synchronize()
        assert bound(torch.cuda.max_memory_allocated() - before), (recording, torch.cuda.max_memory_allocated() - before)
        del y


@pytest.mark.parametrize("backend,device", RUNNABLE)
def test_short_lengths(backend, device):
    for length in (1, 4):
        inputs, softplus = make_inputs(length=length, D=True, initial_state=True, device=device)
        expected = outputs_and_grads(inputs, softplus, "ref")
        assert_all_close(outputs_and_grads(inputs, softplus, backend), expected, 1e-12)


@pytest.mark.parametrize("backend,device", RUNNABLE + [("ref", "cpu")])
def test_two_calls_with_carried_state_equal_one_call(backend, device):
    """Scanning x in two calls, passing last_state on, gives one call's outputs and gradients."""
    inputs, softplus = make_inputs(z=True, D=True, delta_bias=True, softplus=True, initial_state=True, device=device)
    whole = outputs_and_grads(inputs, softplus, backend)
    split = 6
    along_time = [k for k, v in inputs.items() if v is not None and v.dim() >= 3 and k != "initial_state"]
    first = {**inputs, **{k: inputs[k][..., :split] for k in along_time}}
    second = {**inputs, **{k: inputs[k][..., split:] for k in along_time}}
    y1, state = run(first, softplus, backend)
    y2, last = run({**second, "initial_state": state}, softplus, backend)
    assert relative_error(torch.cat([y1, y2], -1), whole["y"]) < 1e-12
    assert relative_error(last, whole["last_state"]) < 1e-12
    # gradient through the carried state: d(sum of second half) / d(first-half u) is nonzero and exact
    grad_split = torch.autograd.grad(y2.sum(), inputs["u"])[0]
    y_whole = run(inputs, softplus, backend, return_last_state=False)
    grad_whole = torch.autograd.grad(y_whole[..., split:].sum(), inputs["u"])[0]
    assert grad_split[..., :split].abs().max() > 0
    assert relative_error(grad_split, grad_whole) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend,device", RUNNABLE)
def test_low_precision_inputs(backend, device, dtype):
    """Outputs and every gradient in its input's dtype, last_state in float32, close to float64 on the same
    (rounded) inputs."""
    inputs, softplus = make_inputs(D=True, z=True, delta_bias=True, softplus=True, initial_state=True, dtype=dtype,
                                   device=device)
    actual = outputs_and_grads(inputs, softplus, backend)
    assert actual["y"].dtype == dtype and actual["last_state"].dtype == torch.float32
    assert {name: actual[f"grad_{name}"].dtype for name, value in inputs.items() if value is not None} == {
        name: value.dtype for name, value in inputs.items() if value is not None}  # initial_state's is float32
    exact_inputs = {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}
    expected = outputs_and_grads(exact_inputs, softplus, "ref")
    output_rounding = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}[dtype]
    assert_all_close(actual, expected, tol=output_rounding)


def test_chunked_float32_error_at_scale(monkeypatch):
    """fp32 chunked vs float64 at the benchmark's shape (shorter L): relative error <= 1e-5 (issue 3 target)."""
    monkeypatch.setattr(scan_chunked, "BLOCK_ELEMENTS", 1 << 16)
    inputs, softplus = make_inputs(batch=1, dim=32, d_state=16, length=512, D=True, z=True, delta_bias=True,
                                   softplus=True, initial_state=True, dtype=torch.float32)
    actual = outputs_and_grads(inputs, softplus, "chunked")
    exact_inputs = {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}
    assert_all_close(actual, outputs_and_grads(exact_inputs, softplus, "ref"), tol=1e-5)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda k: {**k, "u": k["u"][0]}, "u must be"),
        (lambda k: {**k, "delta": k["delta"][..., :-1]}, "delta must have shape"),
        (lambda k: {**k, "A": k["A"][:-1]}, "A must be"),
        (lambda k: {**k, "B": k["B"][..., :-1]}, "B must be"),
        (lambda k: {**k, "C": torch.randn(2, 3, 4, 19, dtype=torch.float64)}, "C must be"),
        (lambda k: {**k, "initial_state": torch.randn(2, 8, 5, dtype=torch.float64)}, "initial_state must have"),
        (lambda k: {**k, "u": k["u"].long()}, "floating-point"),
        (lambda k: {**k, "D": torch.randn(8, device="meta")}, "is on meta"),
    ],
)
def test_scan_input_errors(change, message):
    inputs, _ = make_inputs()
    with pytest.raises(ValueError, match=message):
        selective_scan(**change({k: v for k, v in inputs.items() if v is not None}), backend="chunked")


STEP_BACKENDS = [("ref", d) for d in DEVICES] + TRITON


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("backend,device", STEP_BACKENDS)
def test_state_update_steps_equal_scan(backend, device, grouped):
    """Token-by-token state updates reproduce the float64 scan's y and last state; the input state is untouched."""
    inputs, softplus = make_inputs(bc="grouped" if grouped else "variable", D=True, z=True, delta_bias=True,
                                   softplus=True, initial_state=True, device=device)
    inputs = {k: None if v is None else v.detach() for k, v in inputs.items()}
    y_scan, last_scan = selective_scan_ref(**inputs, delta_softplus=softplus, return_last_state=True)
    state = inputs["initial_state"]
    ys = []
    for t in range(inputs["u"].shape[-1]):
        before = state.clone()
        y_t, new_state = selective_state_update(
            state, inputs["u"][..., t], inputs["delta"][..., t], inputs["A"], inputs["B"][..., t],
            inputs["C"][..., t], inputs["D"], inputs["z"][..., t], dt_bias=inputs["delta_bias"],
            dt_softplus=softplus, backend=backend,
        )
        assert torch.equal(state, before)
        ys.append(y_t)
        state = new_state
    assert relative_error(torch.stack(ys, -1), y_scan) < 1e-12
    assert relative_error(state, last_scan) < 1e-12


def test_state_update_errors(monkeypatch):
    state, x = torch.randn(2, 4, 3), torch.randn(2, 4)
    A, B = -torch.rand(4, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="B must be"):
        selective_state_update(state, x, x, A, torch.randn(2, 4), B)
    with pytest.raises(ValueError, match="dt must have shape"):
        selective_state_update(state, x, x[:1], A, B, B)
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_state_update(state, x, x, A, B, B, backend="fast")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA"):
        selective_state_update(state, x, x, A, B, B, backend="triton")
