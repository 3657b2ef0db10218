"""Test parameters for the Triton backends that stay visible as skips where they cannot run."""

from __future__ import annotations

import os

import pytest

from seqpipe.kernels.backends import triton_importable


def triton_marks(device: str) -> list:
    """Skip marks of a Triton case on ``device``: no triton installed, or CPU without TRITON_INTERPRET=1."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return [
        pytest.mark.skipif(not triton_importable(), reason="triton is not installed"),
        pytest.mark.skipif(device == "cpu" and not interpreted, reason="Triton on CPU needs TRITON_INTERPRET=1"),
    ]


def triton_param(device: str, *values) -> pytest.param:
    """``("triton", device, *values)`` as a parameter, skipped (not dropped) where it cannot run."""
    return pytest.param("triton", device, *values, marks=triton_marks(device), id=f"triton-{device}")
