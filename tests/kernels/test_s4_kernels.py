"""S4 kernels: every init × disc equals the float64 matrix-power kernel; chunked = whole; Triton = reference."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import seqpipe.kernels.s4d as s4d
from seqpipe.kernels.s4d import diag_init, discretize_diag, hippo_legs_normal, log_uniform_dt, s4d_kernel, vandermonde
from seqpipe.kernels.s4_dplr import conjugate_pairs, dplr_init, dplr_kernel


def dense_discretization(A: torch.Tensor, B: torch.Tensor, dt: float, disc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ā, B̄ of a dense complex A (N, N), B (N,), written from the definitions (matrix exponential / Tustin)."""
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    if disc == "zoh":
        dA = torch.linalg.matrix_exp(dt * A)
        return dA, torch.linalg.solve(A, (dA - eye) @ B)
    left = eye - dt / 2 * A
    return torch.linalg.solve(left, eye + dt / 2 * A), torch.linalg.solve(left, dt * B)


def matrix_power_kernel(A, B, C, dt, disc, length, readout=2.0) -> torch.Tensor:
    """K_l = readout · Re(C Ā^l B̄) for l < length, by repeated multiplication in complex128."""
    dA, dB = dense_discretization(A, B, dt, disc)
    values, x = [], dB
    for _ in range(length):
        values.append(readout * (C @ x).real)
        x = dA @ x
    return torch.stack(values)


@pytest.mark.parametrize("init", ["legs", "lin", "inv"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_diag_kernel_equals_matrix_power_kernel(init, disc):
    generator = torch.Generator().manual_seed(0)
    H, N, length = 3, 4, 40
    A, B = diag_init(init, N)
    A = A.repeat(H, 1)
    B = B.repeat(H, 1) * (1 + 0.1 * torch.randn(H, N, generator=generator, dtype=torch.complex128))
    C = torch.randn(H, N, generator=generator, dtype=torch.complex128)
    log_dt = log_uniform_dt(H, 1e-2, 5e-1, generator).double()
    K = s4d_kernel(C, discretize_diag(A, B, log_dt, disc), length, backend="chunked")
    for h in range(H):
        expected = matrix_power_kernel(torch.diag(A[h]), B[h], C[h], log_dt[h].exp().item(), disc, length)
        torch.testing.assert_close(K[h], expected, rtol=0, atol=1e-10 * expected.abs().max())
    K32 = s4d_kernel(C.to(torch.complex64), discretize_diag(A.to(torch.complex64), B.to(torch.complex64), log_dt.float(), disc), length)
    torch.testing.assert_close(K32.double(), K, rtol=0, atol=1e-5 * K.abs().max())


def test_hippo_legs_normal_plus_low_rank_rebuilds_the_legs_matrix():
    N = 6
    n = torch.arange(N, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    legs = -torch.tril(root[:, None] * root[None, :], -1) - torch.diag(n + 1)
    Lambda, V, P, _ = hippo_legs_normal(N)
    rebuilt = V @ (torch.diag(Lambda) - P[:, None] * P.conj()[None, :]) @ V.conj().T
    torch.testing.assert_close(rebuilt, legs.to(torch.complex128), rtol=0, atol=1e-12)
    assert torch.allclose(Lambda.real, torch.full((N,), -0.5, dtype=torch.float64))
    assert (Lambda[: N // 2].imag > 0).all()


def test_initial_step_sizes_are_log_uniform_in_range():
    log_dt = log_uniform_dt(4000, 1e-3, 1e-1, torch.Generator().manual_seed(1))
    assert log_dt.exp().min() >= 1e-3 * (1 - 1e-6) and log_dt.exp().max() <= 1e-1 * (1 + 1e-6)
    assert abs(log_dt.mean().item() - (torch.tensor([1e-3, 1e-1]).log().mean().item())) < 0.1
    with pytest.raises(ValueError, match="dt_min"):
        log_uniform_dt(3, 1e-1, 1e-3)


def random_vandermonde_inputs(seed: int, shape=(2, 3, 5), dtype=torch.complex128):
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(shape, generator=generator, dtype=dtype)
    log_z = torch.complex(-torch.rand(shape, generator=generator) * 0.3, torch.randn(shape, generator=generator)).to(dtype)
    return W, log_z


def test_chunked_generation_equals_whole_generation_values_and_gradients(monkeypatch):
    W, log_z = random_vandermonde_inputs(2)
    length = 37
    W_ref, z_ref = W.clone().requires_grad_(), log_z.clone().requires_grad_()
    K_ref = vandermonde(W_ref, z_ref, length, backend="ref")
    monkeypatch.setattr(s4d, "CHUNK_ELEMENTS", 6 * 5 * 4)  # chunks of 4 steps: 10 chunks, a ragged last one
    W_c, z_c = W.clone().requires_grad_(), log_z.clone().requires_grad_()
    K_c = vandermonde(W_c, z_c, length, backend="chunked")
    torch.testing.assert_close(K_c, K_ref, rtol=0, atol=1e-12)
    grad = torch.randn(K_ref.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    K_ref.backward(grad)
    K_c.backward(grad)
    torch.testing.assert_close(W_c.grad, W_ref.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(z_c.grad, z_ref.grad, rtol=0, atol=1e-10)


def test_chunked_vandermonde_passes_gradcheck():
    W, log_z = random_vandermonde_inputs(4, shape=(2, 3))
    assert torch.autograd.gradcheck(lambda a, b: vandermonde(a, b, 9, backend="chunked"), (W.requires_grad_(), log_z.requires_grad_()))


@pytest.mark.parametrize("block", [None, 4])  # None: one block; 4: three blocks, the last one padded
def test_diag_state_response_equals_the_recurrence(monkeypatch, block):
    generator = torch.Generator().manual_seed(5)
    H, N, T = 3, 4, 11
    if block:
        monkeypatch.setattr(s4d, "CHUNK_ELEMENTS", H * N * block)
    A, B = diag_init("lin", N)
    ssm = discretize_diag(A.repeat(H, 1), B.repeat(H, 1), log_uniform_dt(H, 1e-2, 1e-1, generator).double(), "zoh")
    u = torch.randn(2, H, T, generator=generator, dtype=torch.float64)
    state = torch.zeros(2, H, N, dtype=torch.complex128)
    for t in range(T):
        state = ssm.dA * state + ssm.dB * u[..., t, None]
    torch.testing.assert_close(s4d.diag_state_response(u, ssm), state, rtol=0, atol=1e-12)


def test_backend_names_are_checked():
    W, log_z = random_vandermonde_inputs(6)
    with pytest.raises(ValueError, match="backend"):
        vandermonde(W, log_z, 4, backend="fast")
    with pytest.raises(ValueError, match="complex"):
        vandermonde(W.real, log_z, 4)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_dplr_kernel_equals_matrix_power_kernel(disc):
    generator = torch.Generator().manual_seed(7)
    H, N, length = 2, 8, 33
    Lambda, P, B = (conjugate_pairs(v.repeat(H, 1)) for v in dplr_init(N))
    C = conjugate_pairs(torch.randn(H, N // 2, generator=generator, dtype=torch.complex128))
    log_dt = log_uniform_dt(H, 1e-2, 3e-1, generator).double()
    K = dplr_kernel(C, Lambda, P, B, log_dt, length, disc)
    for h in range(H):
        A = torch.diag(Lambda[h]) - P[h, :, None] * P[h].conj()[None, :]
        expected = matrix_power_kernel(A, B[h], C[h], log_dt[h].exp().item(), disc, length, readout=1.0)
        torch.testing.assert_close(K[h], expected, rtol=0, atol=1e-10 * expected.abs().max())
    K32 = dplr_kernel(*(t.to(torch.complex64) for t in (C, Lambda, P, B)), log_dt.float(), length, disc)
    torch.testing.assert_close(K32.double(), K, rtol=0, atol=1e-4 * K.abs().max())


def test_dplr_legs_has_the_eigenvalues_of_hippo_legs():
    N = 8
    Lambda, P, _ = (conjugate_pairs(v) for v in dplr_init(N))
    eigenvalues = torch.linalg.eigvals(torch.diag(Lambda) - P[:, None] * P.conj()[None, :])
    torch.testing.assert_close(eigenvalues.real.sort().values, -torch.arange(N, 0, -1, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_chunked_dplr_kernel_equals_whole_values_and_gradients(disc, monkeypatch):
    generator = torch.Generator().manual_seed(8)
    H, N, length = 2, 6, 29
    halves = [v.repeat(H, 1) for v in dplr_init(N)] + [torch.randn(H, N // 2, generator=generator, dtype=torch.complex128)]
    log_dt = log_uniform_dt(H, 1e-2, 3e-1, generator).double()

    def kernel_and_grads():
        leaves = [h.clone().requires_grad_() for h in halves]
        Lambda, P, B, C = (conjugate_pairs(v) for v in leaves)
        K = dplr_kernel(C, Lambda, P, B, log_dt, length, disc)
        K.backward(torch.randn(K.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
        return K, [leaf.grad for leaf in leaves]

    K_whole, grads_whole = kernel_and_grads()
    monkeypatch.setattr(s4d, "CHUNK_ELEMENTS", H * N * 4)  # 4 steps or frequencies a chunk, a ragged last one
    K_chunked, grads_chunked = kernel_and_grads()
    torch.testing.assert_close(K_chunked, K_whole, rtol=0, atol=1e-12)
    for chunked, whole in zip(grads_chunked, grads_whole):
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)


def check_triton_against_reference(device: str = "cpu") -> None:
    """Triton Vandermonde (values and gradients) against the complex128 reference; needs TRITON_INTERPRET=1 on CPU."""
    W, log_z = random_vandermonde_inputs(10, shape=(3, 20), dtype=torch.complex64)  # N spans two n-blocks
    length = 150  # three l-blocks, the last one ragged
    W_t, z_t = W.to(device, copy=True).requires_grad_(), log_z.to(device, copy=True).requires_grad_()
    K = vandermonde(W_t, z_t, length, backend="triton").cpu()
    W_r, z_r = W.to(torch.complex128).requires_grad_(), log_z.to(torch.complex128).requires_grad_()
    K_ref = vandermonde(W_r, z_r, length, backend="ref")
    assert K.dtype == torch.float32
    torch.testing.assert_close(K.double(), K_ref, rtol=0, atol=1e-5 * K_ref.abs().max().item())
    grad = torch.randn(K.shape, generator=torch.Generator().manual_seed(11))
    K.backward(grad)
    K_ref.backward(grad.double())
    for mine, reference in ((W_t.grad, W_r.grad), (z_t.grad, z_r.grad)):
        torch.testing.assert_close(mine.cpu().to(torch.complex128), reference, rtol=0, atol=1e-4 * reference.abs().max().item())


def check_triton_dplr_against_reference(device: str = "cpu") -> None:
    """Bilinear DPLR kernel through the Triton Cauchy product (values and gradients of C, Λ, P, B, log Δ) against
    the complex128 PyTorch path (itself checked against the matrix-power kernel above)."""
    generator = torch.Generator().manual_seed(12)
    H, N, length = 3, 40, 150  # N spans three n-blocks, 76 frequencies two f-blocks, both ragged

    def noisy(v: torch.Tensor) -> torch.Tensor:
        return v + 0.1 * torch.randn(v.shape, generator=generator, dtype=torch.complex128)

    halves = [noisy(v.repeat(H, 1)) for v in dplr_init(N)]
    halves.append(torch.randn(2, H, N // 2, generator=generator, dtype=torch.complex128))  # C for two directions
    log_dt = log_uniform_dt(H, 1e-3, 1e-1, generator).double()
    grad = torch.randn(2, H, length, generator=generator, dtype=torch.float64)

    def kernel_and_grads(backend: str, dtype: torch.dtype, where: str):
        leaves = [h.to(where, dtype, copy=True).requires_grad_() for h in halves]
        dt_leaf = log_dt.to(where, torch.float64 if dtype == torch.complex128 else torch.float32, copy=True).requires_grad_()
        Lambda, P, B, C = (conjugate_pairs(v) for v in leaves)
        K = dplr_kernel(C, Lambda, P, B, dt_leaf, length, "bilinear", backend)
        K.backward(grad.to(where, K.dtype))
        return [t.detach().cpu().to(torch.complex128) for t in [K] + [leaf.grad for leaf in leaves] + [dt_leaf.grad]]

    def errors(results):
        return [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(results, reference)]

    reference = kernel_and_grads("chunked", torch.complex128, "cpu")
    mine = errors(kernel_and_grads("triton", torch.complex64, device))
    # log Δ's gradient sums cancelling terms: the complex64 PyTorch path is off by ~4e-4 there too
    single = errors(kernel_and_grads("chunked", torch.complex64, "cpu"))
    for name, error, bound in zip(["K", "Lambda", "P", "B", "C", "log_dt"], mine, single):
        assert error < max(1e-4, 4 * bound), (name, error, bound)


TRITON_CHECKS = ["check_triton_against_reference", "check_triton_dplr_against_reference"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("check", TRITON_CHECKS)
def test_triton_s4_kernels_on_cuda_equal_reference(check):
    globals()[check]("cuda")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("check", TRITON_CHECKS)
def test_triton_s4_kernels_under_interpreter_equal_reference(check):
    # A fresh process: triton reads TRITON_INTERPRET when first imported, and torch may import it earlier.
    code = f"import runpy; runpy.run_path({__file__!r})[{check!r}]()"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TRITON_INTERPRET": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
