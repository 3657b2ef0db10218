"""The one backend choice shared by every kernel op (seqpipe.kernels.backends), directly and through each op."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import seqpipe.kernels.backends as backends
from seqpipe.kernels import selective_scan, selective_state_update, ssd_scan, vandermonde
from seqpipe.kernels.backends import resolve_backend

CUDA_LIKE = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))  # only is_cuda and device are read


def test_auto_backend_and_triton_without_gpu(monkeypatch):
    u = torch.randn(1, 2, 3)
    assert resolve_backend("auto", u, "selective_scan", "u") == "chunked"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", u, "selective_scan", "u")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", u, "selective_scan", "u")


def test_auto_on_cuda_is_triton_only_where_triton_imports(monkeypatch):
    monkeypatch.setattr(backends, "triton_importable", lambda: True)
    assert resolve_backend("auto", CUDA_LIKE, "vandermonde", "W") == "triton"
    monkeypatch.setattr(backends, "triton_importable", lambda: False)
    assert resolve_backend("auto", CUDA_LIKE, "vandermonde", "W") == "chunked"
    assert resolve_backend("auto", CUDA_LIKE, "selective_state_update", "x", ("ref", "triton", "auto"), "ref") == "ref"
    with pytest.raises(ValueError, match="vandermonde: backend='triton' needs the triton package"):
        resolve_backend("triton", CUDA_LIKE, "vandermonde", "W")


def test_the_error_names_the_op_and_its_input(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 2, 1, 1)
    W = torch.randn(3, 4, dtype=torch.complex64)
    calls = {
        "selective_scan: .*u is on cpu": lambda: selective_scan(
            x[..., 0], x[..., 0], torch.randn(2, 1), torch.randn(1, 1, 1), torch.randn(1, 1, 1), backend="triton"),
        "ssd_scan: .*x is on cpu": lambda: ssd_scan(x, x[..., 0], torch.randn(1), x, x, backend="triton"),
        "vandermonde: .*W is on cpu": lambda: vandermonde(W, W, 5, backend="triton"),
        "selective_state_update: .*x is on cpu": lambda: selective_state_update(
            torch.zeros(1, 2, 1), x[:, :, 0, 0], x[:, :, 0, 0], torch.randn(2, 1), torch.randn(1, 1),
            torch.randn(1, 1), backend="triton"),
    }
    for message, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"selective_state_update: backend must be one of \('ref', 'triton', 'auto'\)"):
        selective_state_update(torch.zeros(1, 2, 1), x[:, :, 0, 0], x[:, :, 0, 0], torch.randn(2, 1),
                               torch.randn(1, 1), torch.randn(1, 1), backend="chunked")
