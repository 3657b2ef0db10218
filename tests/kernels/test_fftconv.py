"""fft_conv against a direct float64 convolution: causal, two-sided, D skip, lengths that are not powers of 2 (so
transforms of odd and 3- or 5-smooth sizes, one exactly 2L - 1 long)."""

from __future__ import annotations

import pytest
import torch

from seqpipe.kernels import fft_conv, fft_conv_ref


@pytest.mark.parametrize("length", [1, 2, 7, 13, 64, 81, 100])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_equals_direct_convolution(length, bidirectional):
    generator = torch.Generator().manual_seed(length)
    u = torch.randn(2, 3, length, generator=generator, dtype=torch.float64)
    k = torch.randn(3, length, generator=generator, dtype=torch.float64)
    k_b = torch.randn(3, length, generator=generator, dtype=torch.float64) if bidirectional else None
    D = torch.randn(3, generator=generator, dtype=torch.float64)
    expected = fft_conv_ref(u, k, D, k_b)
    torch.testing.assert_close(fft_conv(u, k, D, k_b), expected, rtol=0, atol=1e-12 * expected.abs().max())
    y32 = fft_conv(u.float(), k.float(), D.float(), None if k_b is None else k_b.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), expected, rtol=0, atol=1e-5 * expected.abs().max())


def test_lags_of_an_impulse_are_where_the_docstring_says():
    length, position = 9, 4
    u = torch.zeros(1, 1, length, dtype=torch.float64)
    u[..., position] = 1.0
    k = torch.arange(1.0, length + 1, dtype=torch.float64)[None]  # lag j -> j + 1
    k_b = -torch.arange(1.0, length + 1, dtype=torch.float64)[None]  # lag -(j + 1) -> -(j + 1)
    y = fft_conv(u, k, bidirectional_k=k_b)[0, 0]
    lag = torch.arange(length, dtype=torch.float64) - position  # y[t] responds at lag t - position
    expected = torch.where(lag >= 0, lag + 1, lag)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_shorter_kernel_is_zero_padded_and_gradients_flow():
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(2, 4, 50, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    y = fft_conv(u, k)
    torch.testing.assert_close(y, fft_conv_ref(u, k), rtol=0, atol=1e-12 * y.abs().max().item())
    (y * torch.randn(y.shape, generator=generator, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(k.grad).all()
    assert torch.autograd.gradcheck(lambda a, b: fft_conv(a, b), (u[:1, :2, :12].detach().requires_grad_(), k[:2, :5].detach().requires_grad_()))


@pytest.mark.parametrize("length, kernel_length", [(1, 1), (7, 7), (100, 100), (100, 30)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_equal_those_of_the_direct_convolution(length, kernel_length, bidirectional):
    """fft_conv's own backward (circular correlations) against autograd through the float64 Toeplitz sums, with
    kernels as long as u and shorter."""
    generator = torch.Generator().manual_seed(length)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    u, k, D = leaf(3, 2, length), leaf(2, kernel_length), leaf(2)
    k_b = leaf(2, kernel_length) if bidirectional else None
    weights = torch.randn(3, 2, length, generator=generator, dtype=torch.float64)
    leaves = [u, k, D] + ([k_b] if bidirectional else [])
    got = torch.autograd.grad((fft_conv(u, k, D, k_b) * weights).sum(), leaves)
    expected = torch.autograd.grad((fft_conv_ref(u, k, D, k_b) * weights).sum(), leaves)
    for name, a, b in zip(["u", "k", "D", "k_b"], got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * b.abs().max().item() + 1e-15, msg=name)
