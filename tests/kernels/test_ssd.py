"""SSD (Mamba-2) scan backends against the float64 step reference, which is itself checked against an
independent per-head loop here. The Triton kernels run compiled on CUDA, interpreted on CPU otherwise."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from seqpipe.kernels import ssd_scan, ssd_scan_ref  # noqa: E402
from triton_params import triton_param  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FAST = [pytest.param("chunked", d, id=f"chunked-{d}") for d in DEVICES] + [triton_param(d) for d in DEVICES]
OPTION_CASES = {
    "plain": dict(),
    "D_z_bias_softplus": dict(D=True, z=True, dt_bias=True, softplus=True),
    "groups_initial_state": dict(groups=2, initial_state=True, D=True, softplus=True),
}
NAMES = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state"]


def make_inputs(seed=0, batch=1, length=37, heads=2, head_dim=3, groups=1, d_state=5, D=False, z=False,
                dt_bias=False, initial_state=False, softplus=False, dtype=torch.float64, device="cpu"):
    """Seeded random inputs (never zeros) as scan keyword arguments with requires_grad set."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(device, dtype)

    inputs = {
        "x": rand(batch, length, heads, head_dim),
        "dt": rand(batch, length, heads, scale=0.5) if softplus else rand(batch, length, heads).abs() * 0.3 + 0.01,
        "A": -(rand(heads).abs() + 0.2),
        "B": rand(batch, length, groups, d_state),
        "C": rand(batch, length, groups, d_state),
        "D": rand(heads) if D else None,
        "z": rand(batch, length, heads, head_dim) if z else None,
        "dt_bias": rand(heads, scale=0.3) if dt_bias else None,
        "initial_state": rand(batch, heads, head_dim, d_state) if initial_state else None,
    }
    return {k: None if v is None else v.requires_grad_() for k, v in inputs.items()}, softplus


def outputs_and_grads(inputs, softplus, backend, chunk_size=16):
    """y, final state and the gradients of a fixed random functional of both, as a dict of float64 CPU tensors."""
    y, final = ssd_scan(**inputs, dt_softplus=softplus, return_final_state=True, chunk_size=chunk_size,
                        backend=backend)
    gen = torch.Generator().manual_seed(123)
    weights_y = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
    weights_s = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(final.device, final.dtype)
    loss = (y * weights_y).sum() + (final * weights_s).sum()
    names = [k for k in NAMES if inputs[k] is not None]
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    result = {"y": y, "final_state": final, **{f"grad_{k}": g for k, g in zip(names, grads)}}
    return {k: v.detach().double().cpu() for k, v in result.items()}, {k: v.dtype for k, v in result.items()}


def assert_all_close(actual, expected, tol):
    assert actual.keys() == expected.keys()
    for key in expected:
        error = ((actual[key] - expected[key]).norm() / expected[key].norm()).item()
        assert error < tol, f"{key}: relative error {error:.2e} >= {tol:.0e}"


def test_reference_equals_a_direct_per_head_loop():
    """The reference (the Mamba-1 reference over repeated per-head parameters) against the recurrence itself."""
    inputs, _ = make_inputs(groups=2, D=True, initial_state=True)
    x, dt, A, B, C, D, state = (inputs[k].detach() for k in ("x", "dt", "A", "B", "C", "D", "initial_state"))
    per_group = x.shape[2] // B.shape[2]
    outputs = []
    for t in range(x.shape[1]):
        B_t, C_t = (M[:, t].repeat_interleave(per_group, dim=1) for M in (B, C))  # (batch, heads, N)
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B_t[:, :, None, :]
        outputs.append((state * C_t[:, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    y, final = ssd_scan_ref(**{k: v.detach() if v is not None else None for k, v in inputs.items()},
                            return_final_state=True)
    torch.testing.assert_close(y, torch.stack(outputs, dim=1), rtol=0, atol=1e-12)
    torch.testing.assert_close(final, state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", OPTION_CASES)
@pytest.mark.parametrize("backend,device", FAST)
def test_backend_equals_reference_in_float64(backend, device, case):
    inputs, softplus = make_inputs(device=device, **OPTION_CASES[case])
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    actual, _ = outputs_and_grads(inputs, softplus, backend)
    assert_all_close(actual, expected, 1e-12)


@pytest.mark.parametrize("chunk_size,length", [(16, 1), (16, 16), (32, 17), (64, 40), (6, 20)])
@pytest.mark.parametrize("backend,device", FAST)
def test_chunk_boundaries_chunks_longer_than_the_sequence_and_any_chunk_size(backend, device, chunk_size, length):
    inputs, softplus = make_inputs(seed=1, length=length, D=True, initial_state=True, device=device)
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, backend, chunk_size)[0], expected, 1e-12)


@pytest.mark.parametrize("backend,device", FAST)
def test_a_split_with_carried_state_equals_the_whole(backend, device):
    inputs, softplus = make_inputs(seed=2, z=True, dt_bias=True, softplus=True, device=device)
    split = 21
    common = dict(A=inputs["A"], dt_bias=inputs["dt_bias"], dt_softplus=softplus, chunk_size=16, backend=backend)

    def part(sl, state):
        return ssd_scan(*(inputs[k][:, sl] for k in ("x", "dt")), B=inputs["B"][:, sl], C=inputs["C"][:, sl],
                        z=inputs["z"][:, sl], initial_state=state, return_final_state=True, **common)

    y_first, state = part(slice(0, split), None)
    y_second, final = part(slice(split, None), state)
    y_whole, final_whole = part(slice(0, None), None)
    torch.testing.assert_close(torch.cat([y_first, y_second], dim=1), y_whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, final_whole, rtol=0, atol=1e-12)


def low_precision_errors(backend, device, dtype, tf32=None, chunk_size=16, **shape):
    """The scan's outputs and gradients on seeded inputs of ``dtype`` (``shape``: make_inputs' sizes and options, by
    default P 16, N 16, with D and z) and on the same rounded inputs in float64: (actual, its dtypes, expected, the
    tolerance of ``dtype``). Triton's float32 products run as tf32 on tensor cores (~3e-4 relative); ``tf32``
    (default: compiled Triton) says they do."""
    inputs, softplus = make_inputs(**{"seed": 3, "head_dim": 16, "d_state": 16, "D": True, "z": True, **shape},
                                   dt_bias=True, softplus=True, initial_state=True, dtype=dtype, device=device)
    actual, dtypes = outputs_and_grads(inputs, softplus, backend, chunk_size)
    exact = {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}
    expected, _ = outputs_and_grads(exact, softplus, "ref")
    tf32 = backend == "triton" and device == "cuda" if tf32 is None else tf32
    tol = {torch.float16: 3e-3, torch.bfloat16: 1.5e-2, torch.float32: 2e-3 if tf32 else 1e-5}[dtype]
    return actual, dtypes, expected, tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("backend,device", FAST)
def test_low_precision_inputs(backend, device, dtype):
    """y and input gradients in the input dtype, the final state in float32, close to float64 on the same (rounded)
    inputs."""
    actual, dtypes, expected, tol = low_precision_errors(backend, device, dtype)
    assert dtypes["y"] == dtype and dtypes["grad_x"] == dtype and dtypes["final_state"] == torch.float32
    assert_all_close(actual, expected, tol)


@pytest.mark.parametrize("dtype,dots_16bit", [(torch.bfloat16, False), (torch.float16, False), (torch.float32, False),
                                              (torch.bfloat16, True), (torch.float16, True)],
                         ids=["bf16", "fp16", "fp32", "bf16-16bit-products", "fp16-16bit-products"])
@pytest.mark.parametrize("backend,device", [triton_param("cpu")])
def test_low_precision_inputs_with_tensor_core_products_in_the_interpreter(backend, device, dtype, dots_16bit,
                                                                           monkeypatch):
    """The interpreter's tl.dot made to read float32 operands as the H200's tensor cores do (the mantissa cut to
    10 bits; this gives the compiled run's errors of issue #16 to two digits, e.g. grad_A 9.5e-3 from fp32 before
    the gradient kernel rounded what it also uses elementwise) and bf16 operands by value (triton 3.6 multiplies
    their raw bits); 16-bit inputs' products in fp32 or, with DOTS_16BIT (as compiled on CUDA), in the input
    dtype: every output within the compiled bounds."""
    from seqpipe.kernels import ssd_triton

    interpreter_dots_as_on_the_h200(monkeypatch)
    monkeypatch.setattr(ssd_triton, "DOTS_16BIT", dots_16bit)
    actual, _, expected, tol = low_precision_errors(backend, device, dtype, tf32=True)
    assert_all_close(actual, expected, tol)


def interpreter_dots_as_on_the_h200(monkeypatch):
    """The interpreter's tl.dot made to read float32 operands as tf32 and bf16 ones by value (see above)."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    from seqpipe.kernels import ssd_triton

    def as_read(handle):
        if handle.dtype.scalar == tl.bfloat16:
            data = interpreter._convert_float(handle.data, tl.bfloat16, tl.float32, None).view(np.float32)
            return interpreter.TensorHandle(data, tl.float32)
        if handle.data.dtype == np.float32:
            return interpreter.TensorHandle((handle.data.view(np.int32) & np.int32(-0x2000)).view(np.float32),
                                            handle.dtype.scalar)
        return handle

    dot = interpreter.InterpreterBuilder.create_dot
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot",
                        lambda self, a, b, *rest: dot(self, as_read(a), as_read(b), *rest))
    monkeypatch.setattr(ssd_triton, "TF32_DOTS", True)


def interpreter_checks_bounds(monkeypatch):
    """Make the interpreter assert that every address a load or store touches where its mask is true lies inside
    one of the launch's tensor arguments (their bytes from data_ptr on)."""
    import numpy as np
    from triton.runtime import interpreter

    extents = []
    init_args = interpreter.GridExecutor._init_args_hst

    def init_args_and_extents(self, args_dev, kwargs):
        args, kwargs_host = init_args(self, args_dev, kwargs)
        extents[:] = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                      for t in [*args, *kwargs_host.values()] if isinstance(t, torch.Tensor)]
        return args, kwargs_host

    def check(pointers, mask, what):
        addresses = pointers.data[np.broadcast_to(mask.data, pointers.data.shape)].astype(np.int64)
        width = pointers.get_element_ty().primitive_bitwidth // 8
        inside = np.zeros(addresses.shape, bool)
        for start, end in extents:
            inside |= (addresses >= start) & (addresses + width <= end)
        assert inside.all(), f"{what} of {(~inside).sum()} elements outside every tensor argument"

    load, store = interpreter.InterpreterBuilder.create_masked_load, interpreter.InterpreterBuilder.create_masked_store

    def checked_load(self, pointers, mask, *rest):
        check(pointers, mask, "load")
        return load(self, pointers, mask, *rest)

    def checked_store(self, pointers, value, mask, *rest):
        check(pointers, mask, "store")
        return store(self, pointers, value, mask, *rest)

    monkeypatch.setattr(interpreter.GridExecutor, "_init_args_hst", init_args_and_extents)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_load", checked_load)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_store", checked_store)


#: ``ssd_triton.SPLIT_GRAD_FROM_N`` above any state width: the gradient kernel as one launch at every N
ONE_LAUNCH = 1 << 20
# make_inputs' sizes at the H200 runs' tilings (P 64, chunk 64; here two chunks and a part): bench/gpu_peers.py's
# SSD table (N 16, gate z), and the 131k training step's Mamba2Block defaults (N 64, four heads, no z)
H200_TILINGS = {"benchmark": dict(heads=2, head_dim=64, d_state=16),
                "mamba2-block": dict(heads=4, head_dim=64, d_state=64, z=False)}


@pytest.mark.parametrize("tiling,split,warps", [("benchmark", False, 4), ("benchmark", False, 8),
                                                ("benchmark", True, 8), ("mamba2-block", True, 4)],
                         ids=["one-launch-4warps", "one-launch-8warps", "two-launches-8warps",
                              "mamba2-block-n64"])
@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_triton_accesses_stay_in_bounds_at_the_h200_tilings(backend, device, tiling, split, warps, monkeypatch):
    """At the H200 runs' tilings (P 64 in channel blocks of 16, chunk 64), bf16 with 16-bit products, an initial
    state and the final state's gradient: every address each kernel loads or stores lies inside a tensor argument
    (checked by the interpreter; compiled, on sm_90 the products are wgmmas, which the other tests' chunk of 16
    never makes), and every output is within the bf16 bounds (issue #16: the benchmark's crashed compiled at 8
    warps, the training step's at 4). At 4 warps every product is 16-bit; at 8 the N-wide ones are fp32
    (``ssd_triton._narrow_dot``)."""
    from seqpipe.kernels import ssd_triton

    interpreter_dots_as_on_the_h200(monkeypatch)
    interpreter_checks_bounds(monkeypatch)
    for flag, value in (("DOTS_16BIT", True), ("SPLIT_GRAD_FROM_N", 0 if split else ONE_LAUNCH), ("GRAD_BLOCK_P", 16),
                        ("NUM_WARPS", warps)):
        monkeypatch.setattr(ssd_triton, flag, value)
    actual, _, expected, tol = low_precision_errors(backend, device, torch.bfloat16, tf32=True, chunk_size=64,
                                                    length=64 * 2 + 37, **H200_TILINGS[tiling])
    assert_all_close(actual, expected, tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_16bit_passed_states(backend, device, dtype, monkeypatch):
    """With PASSED_STATES_16BIT, 16-bit inputs' passed states (the chunks' start states and end-state gradients) are
    stored in the input dtype where the gradients run as two launches, and in fp32 where they run as one or with the
    setting off: every access in bounds (the interpreter checks; the pass stores 16-bit elements where it loads
    32-bit ones) and every output within the dtype's bounds. (On the GPU y alone cannot tell the two apart: its
    16-bit products round the fp32 states to the same operands.)"""
    from seqpipe.kernels import ssd_triton

    passed_dtypes = []

    def pass_states(*args):
        passed, final = pass_states.wrapped(*args)
        passed_dtypes.append(passed.dtype)
        return passed, final

    pass_states.wrapped = ssd_triton._pass_states
    monkeypatch.setattr(ssd_triton, "_pass_states", pass_states)
    interpreter_checks_bounds(monkeypatch)
    shape = dict(length=16 * 4 + 5)  # five chunks of 16: four passed states
    for on, split_from_n, stored in ((True, 0, dtype), (True, ONE_LAUNCH, torch.float32), (False, 0, torch.float32)):
        monkeypatch.setattr(ssd_triton, "PASSED_STATES_16BIT", on)
        monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", split_from_n)
        passed_dtypes.clear()
        actual, _, expected, tol = low_precision_errors(backend, device, dtype, **shape)
        assert passed_dtypes == [stored, stored]  # the forward's start states, the backward's end-state gradients
        assert_all_close(actual, expected, tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a race of compiled code (the interpreter runs serially)")
@pytest.mark.parametrize("shape", [dict(d_state=64), dict(d_state=128), dict(d_state=64, head_dim=128)],
                         ids=["n64", "n128", "n64-p128"])
@pytest.mark.parametrize("block_p", [16, 32], ids=["p16", "p32"])
@pytest.mark.parametrize("split_from_n,passed_16bit", [(64, True), (64, False), (ONE_LAUNCH, False)],
                         ids=["two-launches-states16", "two-launches-states32", "one-launch"])
def test_compiled_16bit_products_at_wide_states_are_right_and_repeat_exactly(shape, split_from_n, passed_16bit,
                                                                             block_p, monkeypatch):
    """bf16 with 16-bit products at the training step's tiling and wider (chunk 64, channel blocks of 16, the
    default, or 32), the gradient kernel as two launches (the default from N 64) or one: every output within the
    bf16 bounds, and a second run identical bit for bit. With the gradient kernel's loop over channel blocks
    unrolled (tl.static_range, triton 3.6) the H200 gave wrong gradients in one launch at N 64 that changed from run
    to run, and an illegal address at N 128 (issue #16). With two launches the passed states in bf16
    (PASSED_STATES_16BIT, the default) or fp32; one launch keeps them in fp32."""
    from seqpipe.kernels import ssd_triton

    for flag, value in (("DOTS_16BIT", True), ("SPLIT_GRAD_FROM_N", split_from_n), ("GRAD_BLOCK_P", block_p),
                        ("NUM_WARPS", 4), ("PASSED_STATES_16BIT", passed_16bit)):
        monkeypatch.setattr(ssd_triton, flag, value)
    sizes = {"heads": 4, "head_dim": 64, "z": False, **shape}
    actual, _, expected, tol = low_precision_errors("triton", "cuda", torch.bfloat16, chunk_size=64,
                                                    length=64 * 2 + 37, **sizes)
    again, _, _, _ = low_precision_errors("triton", "cuda", torch.bfloat16, chunk_size=64, length=64 * 2 + 37,
                                          **sizes)
    assert_all_close(actual, expected, tol)
    assert all(torch.equal(actual[k], again[k]) for k in actual)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="shared memory of a compiled kernel")
@pytest.mark.parametrize("split_from_n", [64, ONE_LAUNCH], ids=["two-launches", "one-launch-falls-back"])
def test_compiled_wide_states_in_float32_fit_and_are_right(split_from_n, monkeypatch):
    """N 128 with z and fp32 operands at chunk 64, the gradient kernel as two launches (the default) or first tried
    as one, which needs 280 KiB of shared memory (the H200 has 227) and falls back to two: every output within the
    tf32 bounds."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", split_from_n)
    actual, _, expected, tol = low_precision_errors("triton", "cuda", torch.float32, chunk_size=64,
                                                    length=64 * 2 + 37, heads=2, head_dim=64, d_state=128)
    assert_all_close(actual, expected, tol)


class GradLaunches:
    """Stands in for one of ``ssd_triton``'s gradient kernels: records each launch's part ("fused" or "x" for
    ``_chunk_grad_kernel``, "bc" for ``_chunk_grad_bc_kernel``) and channel block in ``launched``, and raises
    Triton's shared-memory OutOfResources where ``fits(part, block_p)`` is false instead of launching ``kernel``."""

    def __init__(self, kernel, launched: list, fits=lambda part, block_p: True):
        self.kernel, self.launched, self.fits = kernel, launched, fits

    def __getitem__(self, grid):
        from triton.runtime.errors import OutOfResources

        def launch(*args, **kwargs):
            part = "bc" if "WITH_BC" not in kwargs else "fused" if kwargs["WITH_BC"] else "x"
            self.launched.append((part, kwargs["BLOCK_P"]))
            if not self.fits(part, kwargs["BLOCK_P"]):
                raise OutOfResources(300_000, 232_448, "shared memory")
            return self.kernel[grid](*args, **kwargs)
        return launch

    @staticmethod
    def patch(patch, launched: list, fits=lambda part, block_p: True):
        """Puts a GradLaunches in place of each of the two gradient kernels (``patch``: a monkeypatch)."""
        from seqpipe.kernels import ssd_triton

        for name in ("_chunk_grad_kernel", "_chunk_grad_bc_kernel"):
            kernel = getattr(ssd_triton, name)
            if isinstance(kernel, GradLaunches):  # one stands in already
                kernel = kernel.kernel
            patch.setattr(ssd_triton, name, GradLaunches(kernel, launched, fits))


@pytest.mark.parametrize("backend,device", [triton_param("cpu")])
def test_triton_gradient_launch_falls_back_when_shared_memory_is_short(backend, device, monkeypatch):
    """A gradient launch that does not fit the GPU's shared memory (Triton's OutOfResources) gives way to the two
    launches, then to channel blocks of 16, with the same gradients, also when one of the two launches ran before
    the other did not fit; when none fits, one error naming the sizes."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "GRAD_BLOCK_P", 32)
    monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", ONE_LAUNCH)
    monkeypatch.setattr(ssd_triton, "BC_HEADS", 1)  # dB, dC per head, summed as the one launch's are
    inputs, softplus = make_inputs(seed=4, head_dim=32, d_state=8, D=True, z=True, initial_state=True)
    expected, _ = outputs_and_grads(inputs, softplus, backend)
    launched = []
    # the two launches give the same gradients bit for bit; channel blocks of 16 sum over channels in another order
    for fits, expected_launches, tol in [
        (lambda part, block_p: part != "fused", [("fused", 32), ("x", 32), ("bc", 32)], 0.0),
        (lambda part, block_p: block_p == 16, [("fused", 32), ("x", 32), ("x", 16), ("bc", 16)], 1e-12),
        (lambda part, block_p: part == "x" or block_p == 16,  # dx, ddt, dz written at 32, then all again at 16
         [("fused", 32), ("x", 32), ("bc", 32), ("x", 16), ("bc", 16)], 1e-12),
    ]:
        launched.clear()
        GradLaunches.patch(monkeypatch, launched, fits)
        actual, _ = outputs_and_grads(inputs, softplus, backend)
        assert launched == expected_launches
        errors = {k: ((actual[k] - expected[k]).norm() / expected[k].norm()).item() for k in expected}
        assert max(errors.values()) <= tol, errors
    GradLaunches.patch(monkeypatch, launched, lambda part, block_p: False)
    with pytest.raises(ValueError, match="more shared memory than this GPU has at N 8, head_dim 32, chunk 16"):
        outputs_and_grads(inputs, softplus, backend)


@pytest.mark.parametrize("backend,device", [triton_param("cpu")])
def test_triton_gradient_kernel_is_two_launches_from_wide_states(backend, device, monkeypatch):
    """By default the gradient kernel runs as one launch below N 64 and as two (dx/dz/ddt, then dB/dC) from N 64 on
    (faster on the H200 there, issue #16), with the float64 reference's gradients either way."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "GRAD_BLOCK_P", 16)
    for d_state, expected_launches in [(32, [("fused", 16)]), (64, [("x", 16), ("bc", 16)])]:
        inputs, softplus = make_inputs(seed=5, length=21, head_dim=4, d_state=d_state, D=True, z=True)
        expected, _ = outputs_and_grads(inputs, softplus, "ref")
        launched = []
        with monkeypatch.context() as patch:
            GradLaunches.patch(patch, launched)
            actual, _ = outputs_and_grads(inputs, softplus, backend)
        assert launched == expected_launches
        assert_all_close(actual, expected, 1e-12)


def test_16bit_products_at_every_state_width(monkeypatch):
    """16-bit inputs take 16-bit products at N 16, 64 and 128 alike (they were limited to N 16 until the H200's
    fault at N 64 was found to be the unrolled loops' race, issue #16); 32-bit inputs keep fp32 operands."""
    import triton.language as tl

    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "DOTS_16BIT", True)
    for N in (16, 64, 128):
        assert ssd_triton._meta(torch.zeros(1, 1, 1, 64, dtype=torch.bfloat16), 64, N, 64)["DOT"] == tl.bfloat16
        assert ssd_triton._meta(torch.zeros(1, 1, 1, 64), 64, N, 64)["DOT"] == tl.float32


def test_triton_refuses_tensors_past_32_bit_indexing():
    """The kernels index with 32 bits: 2**31 elements of x (meta tensors, nothing allocated) is one clear error
    before any launch, which says how to split the scan."""
    from seqpipe.kernels.ssd_triton import ssd_scan_triton

    batch, length, heads, P, N = 1, 2**20, 32, 64, 16
    x = torch.empty(batch, length, heads, P, device="meta")
    B = torch.empty(batch, length, 1, N, device="meta")
    with pytest.raises(ValueError, match="32 bits.*2,147,483,648 elements.*initial_state"):
        ssd_scan_triton(x, torch.empty(batch, length, heads, device="meta"), torch.empty(heads, device="meta"), B, B)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda k: {**k, "x": k["x"][0]}, "x must be"),
        (lambda k: {**k, "dt": k["dt"][..., :-1]}, "dt must have shape"),
        (lambda k: {**k, "A": k["A"][:-1]}, "A must have shape"),
        (lambda k: {**k, "B": torch.randn(1, 37, 3, 5, dtype=torch.float64)}, "groups dividing heads=2"),
        (lambda k: {**k, "C": k["C"][..., :-1]}, "C must have shape"),
        (lambda k: {**k, "initial_state": torch.randn(1, 2, 3, 4, dtype=torch.float64)}, "initial_state must"),
        (lambda k: {**k, "x": k["x"].long()}, "floating-point"),
        (lambda k: {**k, "A": torch.randn(2, device="meta")}, "is on meta"),
    ],
)
def test_input_errors(change, message):
    inputs, _ = make_inputs()
    with pytest.raises(ValueError, match=message):
        ssd_scan(**change({k: v for k, v in inputs.items() if v is not None}), backend="chunked")


def test_backend_resolution_without_gpu(monkeypatch):
    x = torch.randn(1, 2, 1, 1)
    args = (x, x[..., 0], torch.randn(1), x, x)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        ssd_scan(*args, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        ssd_scan(*args, backend="cuda")
    torch.testing.assert_close(ssd_scan(*args), ssd_scan(*args, backend="ref"))  # auto is chunked on CPU


@pytest.mark.parametrize("split,block_p", [(True, 16), (False, 16), (True, 64)],
                         ids=["two-launches-p16", "one-launch-p16", "two-launches-p64"])
@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_triton_gradient_kernel_split_or_fused_and_channel_blocks(backend, device, split, block_p, monkeypatch):
    """The gradient kernel as two launches (dx/dz/ddt, then dB/dC) or one, over P = 40 channels in three blocks of
    16 (the last one part masked) or in one block, gives the float64 reference."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", 0 if split else ONE_LAUNCH)
    monkeypatch.setattr(ssd_triton, "GRAD_BLOCK_P", block_p)
    inputs, softplus = make_inputs(seed=4, length=45, groups=2, heads=4, head_dim=40, D=True, z=True,
                                   dt_bias=True, softplus=True, initial_state=True, device=device)
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, backend)[0], expected, 1e-12)


@pytest.mark.parametrize("bc_heads", [1, 2, 3, 4])
@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_triton_dB_dC_summed_over_heads_of_a_group(backend, device, bc_heads, monkeypatch):
    """The dB/dC launch sums over BC_HEADS heads of a group a program (3 heads a group, two batch rows: a head a
    program, two with one left over, all three, or fewer than a program takes), and gives the float64 reference."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", 0)
    monkeypatch.setattr(ssd_triton, "BC_HEADS", bc_heads)
    inputs, softplus = make_inputs(seed=6, batch=2, length=40, groups=2, heads=6, head_dim=8, D=True, z=True,
                                   softplus=True, initial_state=True, device=device)
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, backend)[0], expected, 1e-12)


@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_triton_dB_dC_summed_over_the_default_heads_a_program(backend, device, monkeypatch):
    """At the module's own BC_HEADS (the benchmarks' setting): one group of BC_HEADS + 3 heads, so a full program
    and a part one, gives the float64 reference."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "SPLIT_GRAD_FROM_N", 0)
    inputs, softplus = make_inputs(seed=7, length=20, groups=1, heads=ssd_triton.BC_HEADS + 3, head_dim=4,
                                   d_state=3, D=True, z=True, softplus=True, initial_state=True, device=device)
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, backend)[0], expected, 1e-12)


@pytest.mark.parametrize("chunks", [1, 4, 8, 16])
@pytest.mark.parametrize("backend,device", [triton_param(d) for d in DEVICES])
def test_triton_state_pass_over_many_chunks_a_few_at_a_time(backend, device, chunks, monkeypatch):
    """The sequential pass over 43 chunks of 16 steps (the last one part), PASS_CHUNKS at a time (the last step
    part past the end), forward and reverse, with an initial and a final state: the float64 reference."""
    from seqpipe.kernels import ssd_triton

    monkeypatch.setattr(ssd_triton, "PASS_CHUNKS", chunks)
    inputs, softplus = make_inputs(seed=5, length=16 * 42 + 5, heads=2, head_dim=4, d_state=3, D=True,
                                   initial_state=True, device=device)
    expected, _ = outputs_and_grads(inputs, softplus, "ref")
    assert_all_close(outputs_and_grads(inputs, softplus, backend)[0], expected, 1e-12)
